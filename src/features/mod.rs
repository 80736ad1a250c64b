//! Features: TA-Lib-exact indicators (`talib`); the 112-feature pipeline of
//! spec/features.md builds on them (features issue).

pub mod talib;
