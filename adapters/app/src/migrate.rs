//! `stowage migrate --from FILE --to FILE`: the stores of two configuration files.

use std::path::Path;

use stowage_storage::Stores;

use crate::{Config, StartError};

/// Copies the stores `from` names into those `to` names, and prints what it did.
pub(crate) fn migrate(from: &Path, to: &Path) -> Result<(), StartError> {
    let from = stores(&Config::load(Some(from))?)?;
    let to = stores(&Config::load(Some(to))?)?;
    let summary = stowage_migrate::run(&from, &to)?;
    println!("migrated: {summary}");
    Ok(())
}

fn stores(config: &Config) -> Result<Stores, StartError> {
    let blobs = config
        .blob_store_settings()
        .ok_or(StartError::NoBlobStore)?;
    Ok(Stores::open(
        &blobs,
        config.metadata_store_settings().as_ref(),
    )?)
}
