//! The `features` subcommand: the 112-feature table of a stored history.

use std::path::Path;

use anyhow::{bail, Result};

use super::progress::Progress;

/// `quorum features`: the batch path over each symbol's whole stored history.
pub fn features(raw: &Path, out: &Path, symbol: Option<&str>) -> Result<()> {
    use quorum::features::{build_from_store, write_feature_table, StoreBuild};
    use quorum::market::store::{list_files, list_symbols, symbols_hint, SNAPSHOT_PREFIX};
    if !raw.is_dir() {
        bail!(
            "--raw {}: no such folder; write a store with `quorum simulate --out DIR`, `quorum collect` or `quorum import`",
            raw.display()
        );
    }
    let symbols: Vec<String> = match symbol {
        Some(s) => {
            if list_files(raw, s, SNAPSHOT_PREFIX).map_or(true, |f| f.is_empty()) {
                bail!("--symbol {s}: no snapshots of {s}; {}", symbols_hint(raw));
            }
            vec![s.to_owned()]
        }
        None => list_symbols(raw),
    };
    if symbols.is_empty() {
        bail!("{}", symbols_hint(raw));
    }
    for sym in symbols {
        let t0 = std::time::Instant::now();
        println!("{sym}: reading {}", raw.join(&sym).display());
        let spinner = Progress::spinner("features");
        let progress = |n: u64| spinner.message(&format!("{sym}: {n} snapshots read"));
        let StoreBuild { table, stats, .. } = build_from_store(raw, &sym, false, progress)?;
        spinner.finish();
        let path = out.join(format!("{sym}.parquet"));
        write_feature_table(&path, &sym, &table)?;
        println!(
            "{sym}: {} rows written to {} in {:.1} s ({} ticks accepted, {} warming up, {} inputs rejected: \
             {} crossed, {} empty top, {} invalid, {} thin, {} snapshots and {} trades out of order, {} bad trades; \
             {} resets)",
            table.len(),
            path.display(),
            t0.elapsed().as_secs_f64(),
            stats.accepted_snapshots,
            stats.warming_up,
            stats.rejected(),
            stats.crossed,
            stats.empty_top,
            stats.invalid_book,
            stats.thin_book,
            stats.snapshots_out_of_order,
            stats.trades_out_of_order,
            stats.bad_trades + stats.trade_jumps,
            stats.resets
        );
    }
    Ok(())
}
