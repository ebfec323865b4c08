//! Key rotation cost against data size: master-key rotation and resource-key
//! rotation re-wrap keys only, so their time must not grow with the data.
//! `Db::rekey` (re-encrypting every page) is measured beside them as the cost
//! that rotation avoids.
//!
//! Run: `cargo run --release -p moat-store --example rotation`

use std::time::Instant;

use moat_keys::{KeyBytes, KeyRing, SoftwareMasterKey};
use moat_store::Db;
use ring::rand::SystemRandom;

fn main() {
    let rng = SystemRandom::new();
    println!(
        "{:>8} | {:>14} | {:>16} | {:>22}",
        "data", "master rotation", "resource rotation", "rekey (rewrite all)"
    );
    for (label, bytes) in [("10 MB", 10usize << 20), ("1 GB", 1usize << 30)] {
        let dir = std::env::temp_dir().join(format!("moat-rotation-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let master = Box::new(SoftwareMasterKey::new(
            "software",
            KeyBytes::generate(&rng).unwrap(),
        ));
        let mut ring = KeyRing::open(&dir.join("keys"), master).unwrap();
        // Realistic neighbours: other resources' keys are re-wrapped too.
        for i in 0..100 {
            ring.resource_key(&format!(
                "arn:aws:dynamodb:us-east-1:123456789012:table/t{i}"
            ))
            .unwrap();
        }
        let resource = "arn:aws:dynamodb:us-east-1:123456789012:table/bench";
        let dbkey_file = dir.join("bench.dbkey");
        let key = ring.database_key(resource, &dbkey_file).unwrap();
        let db = Db::open(&dir.join("bench.db"), key.expose()).unwrap();
        let value = vec![0x5au8; 1024];
        let items = bytes / 1024;
        for batch in 0..items.div_ceil(1024) {
            db.transaction(|tx| -> Result<(), moat_store::StoreError> {
                for i in batch * 1024..((batch + 1) * 1024).min(items) {
                    tx.put("items", format!("{i:012}").as_bytes(), &value)?;
                }
                Ok(())
            })
            .unwrap();
        }

        let t = Instant::now();
        ring.rotate_master(Box::new(SoftwareMasterKey::new(
            "software",
            KeyBytes::generate(&rng).unwrap(),
        )))
        .unwrap();
        let master_time = t.elapsed();

        let t = Instant::now();
        ring.rotate_resource_key(resource, &[&dbkey_file]).unwrap();
        let resource_time = t.elapsed();
        assert_eq!(ring.database_key(resource, &dbkey_file).unwrap(), key);

        let t = Instant::now();
        db.rekey(KeyBytes::generate(&rng).unwrap().expose())
            .unwrap();
        let rekey_time = t.elapsed();

        println!(
            "{label:>8} | {:>12.2} ms | {:>14.2} ms | {:>20.0} ms",
            master_time.as_secs_f64() * 1e3,
            resource_time.as_secs_f64() * 1e3,
            rekey_time.as_secs_f64() * 1e3
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
