//! The command line both server binaries accept.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Stowage: an OCI Distribution registry")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the registry. Without --config: filesystem storage under ./data, in-memory
    /// locks, 127.0.0.1:5000.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Copy the blob and metadata stores of one configuration into those of another (fs or
    /// S3): every blob is verified against its digest, tags come after the blobs they name,
    /// and a rerun after an interruption copies only what is missing.
    Migrate {
        /// The configuration whose stores are copied.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The configuration whose stores receive the copy.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Collect garbage beside live servers: delete the blobs no manifest references and
    /// the layer links no manifest of their repository names, once older than `[gc]
    /// grace_period_secs`. Safe while replicas push (see docs/gc.md).
    Gc {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete manifests too that no tag, index or referrer keeps.
        #[arg(long)]
        delete_untagged: bool,
    },
    /// Read a password from standard input and print its argon2 hash, for
    /// `[auth.identity.<name>] password`.
    HashPassword,
}
