//! Binance spot public market-data messages: the combined-stream envelope,
//! `depthUpdate` (`<symbol>@depth@100ms`), `aggTrade` (`<symbol>@aggTrade`),
//! `trade` (`<symbol>@trade`), the best bid and ask (`<symbol>@bookTicker`,
//! whose payload has no `e`) and the REST depth snapshot (`/api/v3/depth`). Parsing never panics: malformed,
//! truncated or out-of-range input is a [`BinanceError`]. Prices and quantities
//! are parsed exactly into [`Fixed`]. The `to_json` methods write the same
//! formats (for the simulator's loopback exchange).

use serde::Deserialize;

use super::decimal::{DecimalError, Fixed};
use super::types::Trade;

/// A price level as sent by the exchange: `["price", "quantity"]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriceLevel {
    pub price: Fixed,
    pub quantity: Fixed,
}

impl PriceLevel {
    pub fn new(price: Fixed, quantity: Fixed) -> PriceLevel {
        PriceLevel { price, quantity }
    }
}

/// A diff-depth event (`"e": "depthUpdate"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepthUpdate {
    /// `E`, event time (ms).
    pub event_time_ms: i64,
    /// `s`
    pub symbol: String,
    /// `U`, first update id in the event.
    pub first_update_id: u64,
    /// `u`, final update id in the event.
    pub final_update_id: u64,
    /// `b`, absolute quantities; 0 removes the level.
    pub bids: Vec<PriceLevel>,
    /// `a`
    pub asks: Vec<PriceLevel>,
}

/// An aggregate trade (`"e": "aggTrade"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggTrade {
    /// `E`
    pub event_time_ms: i64,
    /// `s`
    pub symbol: String,
    /// `a`
    pub agg_trade_id: u64,
    /// `p`
    pub price: Fixed,
    /// `q`
    pub quantity: Fixed,
    /// `f`
    pub first_trade_id: u64,
    /// `l`
    pub last_trade_id: u64,
    /// `T`
    pub trade_time_ms: i64,
    /// `m`: the buyer is the maker (the aggressor sold).
    pub is_buyer_maker: bool,
}

impl AggTrade {
    /// The stored trade row (docs/data.md): trade time, aggregate id, price,
    /// quantity, buyer-is-maker.
    pub fn to_trade(&self) -> Trade {
        Trade {
            ts_exchange_ms: self.trade_time_ms,
            trade_id: self.agg_trade_id,
            price: self.price.to_f64(),
            quantity: self.quantity.to_f64(),
            is_buyer_maker: self.is_buyer_maker,
        }
    }
}

/// A single trade (`"e": "trade"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeEvent {
    /// `E`
    pub event_time_ms: i64,
    /// `s`
    pub symbol: String,
    /// `t`
    pub trade_id: u64,
    /// `p`
    pub price: Fixed,
    /// `q`
    pub quantity: Fixed,
    /// `T`
    pub trade_time_ms: i64,
    /// `m`: the buyer is the maker (the aggressor sold).
    pub is_buyer_maker: bool,
}

impl TradeEvent {
    /// The stored trade row, as [`AggTrade::to_trade`] with the trade's own id.
    pub fn to_trade(&self) -> Trade {
        Trade {
            ts_exchange_ms: self.trade_time_ms,
            trade_id: self.trade_id,
            price: self.price.to_f64(),
            quantity: self.quantity.to_f64(),
            is_buyer_maker: self.is_buyer_maker,
        }
    }
}

/// The best bid and ask (`<symbol>@bookTicker`): the top of the book at update id `u`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookTicker {
    /// `u`, the order book update id.
    pub update_id: u64,
    /// `s`
    pub symbol: String,
    /// `b`, `B`
    pub bid: PriceLevel,
    /// `a`, `A`
    pub ask: PriceLevel,
}

/// The REST depth snapshot (`GET /api/v3/depth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepthSnapshot {
    pub last_update_id: u64,
    pub bids: Vec<PriceLevel>,
    pub asks: Vec<PriceLevel>,
}

/// One message of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Depth(DepthUpdate),
    AggTrade(AggTrade),
    Trade(TradeEvent),
    BookTicker(BookTicker),
    /// Any other event type (ignored by the collector, but not an error).
    Other,
}

/// A combined-stream message: `{"stream": ..., "data": ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMessage {
    pub stream: String,
    pub event: StreamEvent,
}

/// Why a message was refused. Messages name the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinanceError {
    #[error("malformed JSON message: {0}")]
    Json(String),
    #[error("field {field}: {source}")]
    Decimal {
        field: String,
        #[source]
        source: DecimalError,
    },
    #[error("field {field}: a price must be positive")]
    ZeroPrice { field: String },
    #[error("depthUpdate: U = {first} is greater than u = {last}")]
    UpdateRange { first: u64, last: u64 },
    #[error("aggTrade: f = {first} is greater than l = {last}")]
    TradeRange { first: u64, last: u64 },
    #[error("field s: empty symbol")]
    EmptySymbol,
}

fn json_err(e: serde_json::Error) -> BinanceError {
    BinanceError::Json(e.to_string())
}

// ---- raw serde shapes -------------------------------------------------------

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    stream: &'a str,
    /// Parsed once the stream name is known (a `bookTicker` payload has no `e`).
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

#[derive(Deserialize)]
#[serde(tag = "e")]
enum RawEvent<'a> {
    #[serde(rename = "depthUpdate")]
    Depth(#[serde(borrow)] RawDepth<'a>),
    #[serde(rename = "aggTrade")]
    AggTrade(#[serde(borrow)] RawAggTrade<'a>),
    #[serde(rename = "trade")]
    Trade(#[serde(borrow)] RawTrade<'a>),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct RawDepth<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(rename = "s", borrow)]
    symbol: &'a str,
    #[serde(rename = "U")]
    first: u64,
    #[serde(rename = "u")]
    last: u64,
    #[serde(rename = "b", borrow)]
    bids: Vec<[&'a str; 2]>,
    #[serde(rename = "a", borrow)]
    asks: Vec<[&'a str; 2]>,
}

#[derive(Deserialize)]
struct RawAggTrade<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(rename = "s", borrow)]
    symbol: &'a str,
    #[serde(rename = "a")]
    agg_id: u64,
    #[serde(rename = "p", borrow)]
    price: &'a str,
    #[serde(rename = "q", borrow)]
    quantity: &'a str,
    #[serde(rename = "f")]
    first: u64,
    #[serde(rename = "l")]
    last: u64,
    #[serde(rename = "T")]
    trade_time: i64,
    #[serde(rename = "m")]
    buyer_maker: bool,
}

#[derive(Deserialize)]
struct RawTrade<'a> {
    #[serde(rename = "E")]
    event_time: i64,
    #[serde(rename = "s", borrow)]
    symbol: &'a str,
    #[serde(rename = "t")]
    trade_id: u64,
    #[serde(rename = "p", borrow)]
    price: &'a str,
    #[serde(rename = "q", borrow)]
    quantity: &'a str,
    #[serde(rename = "T")]
    trade_time: i64,
    #[serde(rename = "m")]
    buyer_maker: bool,
}

#[derive(Deserialize)]
struct RawBookTicker<'a> {
    #[serde(rename = "u")]
    update_id: u64,
    #[serde(rename = "s", borrow)]
    symbol: &'a str,
    #[serde(rename = "b", borrow)]
    bid_price: &'a str,
    #[serde(rename = "B", borrow)]
    bid_qty: &'a str,
    #[serde(rename = "a", borrow)]
    ask_price: &'a str,
    #[serde(rename = "A", borrow)]
    ask_qty: &'a str,
}

#[derive(Deserialize)]
struct RawSnapshot<'a> {
    #[serde(rename = "lastUpdateId")]
    last_update_id: u64,
    #[serde(borrow)]
    bids: Vec<[&'a str; 2]>,
    #[serde(borrow)]
    asks: Vec<[&'a str; 2]>,
}

// ---- conversion -------------------------------------------------------------

fn levels(raw: &[[&str; 2]], side: &str) -> Result<Vec<PriceLevel>, BinanceError> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, [p, q]) in raw.iter().enumerate() {
        let price =
            Fixed::parse(p).map_err(|source| BinanceError::Decimal { field: format!("{side}[{i}].price"), source })?;
        if price.is_zero() {
            return Err(BinanceError::ZeroPrice { field: format!("{side}[{i}].price") });
        }
        let quantity = Fixed::parse(q)
            .map_err(|source| BinanceError::Decimal { field: format!("{side}[{i}].quantity"), source })?;
        out.push(PriceLevel { price, quantity });
    }
    Ok(out)
}

fn convert_depth(r: RawDepth<'_>) -> Result<DepthUpdate, BinanceError> {
    if r.symbol.is_empty() {
        return Err(BinanceError::EmptySymbol);
    }
    if r.first > r.last {
        return Err(BinanceError::UpdateRange { first: r.first, last: r.last });
    }
    Ok(DepthUpdate {
        event_time_ms: r.event_time,
        symbol: r.symbol.to_owned(),
        first_update_id: r.first,
        final_update_id: r.last,
        bids: levels(&r.bids, "b")?,
        asks: levels(&r.asks, "a")?,
    })
}

fn convert_agg(r: RawAggTrade<'_>) -> Result<AggTrade, BinanceError> {
    if r.symbol.is_empty() {
        return Err(BinanceError::EmptySymbol);
    }
    if r.first > r.last {
        return Err(BinanceError::TradeRange { first: r.first, last: r.last });
    }
    let price = Fixed::parse(r.price).map_err(|source| BinanceError::Decimal { field: "p".into(), source })?;
    if price.is_zero() {
        return Err(BinanceError::ZeroPrice { field: "p".into() });
    }
    let quantity = Fixed::parse(r.quantity).map_err(|source| BinanceError::Decimal { field: "q".into(), source })?;
    Ok(AggTrade {
        event_time_ms: r.event_time,
        symbol: r.symbol.to_owned(),
        agg_trade_id: r.agg_id,
        price,
        quantity,
        first_trade_id: r.first,
        last_trade_id: r.last,
        trade_time_ms: r.trade_time,
        is_buyer_maker: r.buyer_maker,
    })
}

fn decimal(text: &str, field: &str) -> Result<Fixed, BinanceError> {
    Fixed::parse(text).map_err(|source| BinanceError::Decimal { field: field.into(), source })
}

fn positive_price(text: &str, field: &str) -> Result<Fixed, BinanceError> {
    let price = decimal(text, field)?;
    if price.is_zero() {
        return Err(BinanceError::ZeroPrice { field: field.into() });
    }
    Ok(price)
}

fn convert_trade(r: RawTrade<'_>) -> Result<TradeEvent, BinanceError> {
    if r.symbol.is_empty() {
        return Err(BinanceError::EmptySymbol);
    }
    Ok(TradeEvent {
        event_time_ms: r.event_time,
        symbol: r.symbol.to_owned(),
        trade_id: r.trade_id,
        price: positive_price(r.price, "p")?,
        quantity: decimal(r.quantity, "q")?,
        trade_time_ms: r.trade_time,
        is_buyer_maker: r.buyer_maker,
    })
}

fn convert_book_ticker(r: RawBookTicker<'_>) -> Result<BookTicker, BinanceError> {
    if r.symbol.is_empty() {
        return Err(BinanceError::EmptySymbol);
    }
    Ok(BookTicker {
        update_id: r.update_id,
        symbol: r.symbol.to_owned(),
        bid: PriceLevel::new(positive_price(r.bid_price, "b")?, decimal(r.bid_qty, "B")?),
        ask: PriceLevel::new(positive_price(r.ask_price, "a")?, decimal(r.ask_qty, "A")?),
    })
}

fn convert_event(r: RawEvent<'_>) -> Result<StreamEvent, BinanceError> {
    Ok(match r {
        RawEvent::Depth(d) => StreamEvent::Depth(convert_depth(d)?),
        RawEvent::AggTrade(t) => StreamEvent::AggTrade(convert_agg(t)?),
        RawEvent::Trade(t) => StreamEvent::Trade(convert_trade(t)?),
        RawEvent::Other => StreamEvent::Other,
    })
}

/// Parses a combined-stream message `{"stream": "...", "data": {...}}`. The
/// payload of a `<symbol>@bookTicker` stream (no `e` field) is a
/// [`StreamEvent::BookTicker`]; any other payload is read by its `e`.
pub fn parse_combined(text: &str) -> Result<StreamMessage, BinanceError> {
    let env: RawEnvelope<'_> = serde_json::from_str(text).map_err(json_err)?;
    let data = env.data.get();
    let event = if env.stream.ends_with("@bookTicker") {
        let raw: RawBookTicker<'_> = serde_json::from_str(data).map_err(json_err)?;
        StreamEvent::BookTicker(convert_book_ticker(raw)?)
    } else {
        let raw: RawEvent<'_> = serde_json::from_str(data).map_err(json_err)?;
        convert_event(raw)?
    };
    Ok(StreamMessage { stream: env.stream.to_owned(), event })
}

/// Parses a raw-stream payload (no envelope).
pub fn parse_event(text: &str) -> Result<StreamEvent, BinanceError> {
    let raw: RawEvent<'_> = serde_json::from_str(text).map_err(json_err)?;
    convert_event(raw)
}

/// Parses a `depthUpdate` payload.
pub fn parse_depth_update(text: &str) -> Result<DepthUpdate, BinanceError> {
    match parse_event(text)? {
        StreamEvent::Depth(d) => Ok(d),
        _ => Err(BinanceError::Json("field e: expected \"depthUpdate\"".into())),
    }
}

/// Parses an `aggTrade` payload.
pub fn parse_agg_trade(text: &str) -> Result<AggTrade, BinanceError> {
    match parse_event(text)? {
        StreamEvent::AggTrade(t) => Ok(t),
        _ => Err(BinanceError::Json("field e: expected \"aggTrade\"".into())),
    }
}

/// Parses the REST depth snapshot `{"lastUpdateId": .., "bids": [..], "asks": [..]}`.
pub fn parse_depth_snapshot(text: &str) -> Result<DepthSnapshot, BinanceError> {
    let raw: RawSnapshot<'_> = serde_json::from_str(text).map_err(json_err)?;
    Ok(DepthSnapshot {
        last_update_id: raw.last_update_id,
        bids: levels(&raw.bids, "bids")?,
        asks: levels(&raw.asks, "asks")?,
    })
}

// ---- writing ----------------------------------------------------------------

fn push_levels(out: &mut String, levels: &[PriceLevel]) {
    use std::fmt::Write;
    out.push('[');
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "[\"{}\",\"{}\"]", l.price, l.quantity);
    }
    out.push(']');
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

impl DepthUpdate {
    /// The raw-stream payload, as Binance sends it.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(96 + 32 * (self.bids.len() + self.asks.len()));
        out.push_str(&format!(
            "{{\"e\":\"depthUpdate\",\"E\":{},\"s\":{},\"U\":{},\"u\":{},\"b\":",
            self.event_time_ms,
            json_string(&self.symbol),
            self.first_update_id,
            self.final_update_id
        ));
        push_levels(&mut out, &self.bids);
        out.push_str(",\"a\":");
        push_levels(&mut out, &self.asks);
        out.push('}');
        out
    }
}

impl AggTrade {
    /// The raw-stream payload, as Binance sends it.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"e\":\"aggTrade\",\"E\":{},\"s\":{},\"a\":{},\"p\":\"{}\",\"q\":\"{}\",\"f\":{},\"l\":{},\"T\":{},\"m\":{},\"M\":true}}",
            self.event_time_ms,
            json_string(&self.symbol),
            self.agg_trade_id,
            self.price,
            self.quantity,
            self.first_trade_id,
            self.last_trade_id,
            self.trade_time_ms,
            self.is_buyer_maker
        )
    }
}

impl DepthSnapshot {
    /// The REST response body.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + 32 * (self.bids.len() + self.asks.len()));
        out.push_str(&format!("{{\"lastUpdateId\":{},\"bids\":", self.last_update_id));
        push_levels(&mut out, &self.bids);
        out.push_str(",\"asks\":");
        push_levels(&mut out, &self.asks);
        out.push('}');
        out
    }
}

/// Wraps a raw payload in the combined-stream envelope.
pub fn combined_json(stream: &str, payload_json: &str) -> String {
    format!("{{\"stream\":{},\"data\":{}}}", json_string(stream), payload_json)
}
