//! Market data: exact L2 order book, Binance protocol messages, the seeded
//! market simulator, the Parquet store and the TLOB input sequence
//! (docs/data.md); the Binance client, the collector, the importer of
//! recorded frames and the loopback exchange.

pub mod binance;
pub mod book;
pub mod client;
pub mod collector;
pub mod decimal;
pub mod exchange;
pub mod import;
pub mod recording;
pub mod replay;
pub mod sequence;
pub mod simulator;
pub mod store;
pub mod types;

pub use binance::{AggTrade, BinanceError, DepthSnapshot, DepthUpdate, PriceLevel, StreamEvent, StreamMessage};
pub use book::{BookError, BookStats, DiffOutcome, OrderBook, SyncReport};
pub use client::{ClientError, ClientStats, ClientTuning, Endpoint, BINANCE_REST_URL, BINANCE_WS_URL};
pub use collector::{CollectorError, CollectorStats, RawLOBCollector, RawLOBConfig};
pub use decimal::{DecimalError, Fixed};
pub use exchange::{ExchangeConfig, ExchangeError, Fault, LoopbackExchange, ScheduledFault, TruthLog};
pub use import::{import_files, ImportError, ImportOptions, ImportReport};
pub use recording::RecordFormat;
pub use replay::{ReplayError, ReplayFeed};
pub use sequence::{snapshot_rows, RawLOBSequence, SequenceError, SNAPSHOT_ROW};
pub use simulator::{parse_duration, simulate_to_parquet, MarketSimulator, SimConfig, SimError, SimSummary, TickView};
pub use store::{read_snapshots, read_trades, write_snapshots, write_trades, SnapshotWriter, StoreError, TradeWriter};
pub use types::{is_exchange_symbol, Level, Snapshot, SnapshotError, Trade, EXCHANGE_SYMBOL_RULE, NUM_LEVELS};
