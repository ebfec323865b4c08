//! The PKCS#11 master key against SoftHSM2 (Debian's `softhsm2`, which
//! `scripts/test` installs), with a token in a temporary directory of its own.
//!
//! The tests run one at a time: they share the process's one PKCS#11 login
//! state, and `SOFTHSM2_CONF` must be set before the module is initialised.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use moat_keys::{
    key_check_value, matches_check_value, KeyBytes, KeyError, KeyRing, MasterKey, Pkcs11Config,
    Pkcs11MasterKey, SoftwareMasterKey,
};
use ring::rand::SystemRandom;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "moat-test";
const PIN: &str = "5678";

struct Hsm {
    dir: PathBuf,
}

/// The token, initialised once per test binary; holding the guard runs the
/// test alone.
fn hsm() -> MutexGuard<'static, Hsm> {
    static HSM: OnceLock<Mutex<Hsm>> = OnceLock::new();
    let hsm = HSM.get_or_init(|| Mutex::new(init_token()));
    hsm.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn init_token() -> Hsm {
    let util = Command::new("softhsm2-util").arg("--version").output();
    assert!(
        Path::new(MODULE).exists() && util.is_ok(),
        "SoftHSM2 is not installed ({MODULE} or softhsm2-util is missing): \
         run scripts/test, which installs the Debian package softhsm2"
    );
    // Tokens of earlier runs whose process is gone.
    for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("moat-softhsm-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("moat-softhsm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--so-pin", "1234", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util --init-token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Before any test loads the module, which reads it in C_Initialize.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    Hsm { dir }
}

impl Hsm {
    fn config(&self, key_label: &str, create_key: bool) -> Pkcs11Config {
        Pkcs11Config {
            module: MODULE.into(),
            token_label: TOKEN.into(),
            pin: PIN.into(),
            key_label: key_label.into(),
            create_key,
        }
    }

    fn open(&self, key_label: &str, create_key: bool) -> Pkcs11MasterKey {
        Pkcs11MasterKey::open(&self.config(key_label, create_key)).unwrap()
    }

    fn temp(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

fn random_key() -> KeyBytes {
    KeyBytes::generate(&SystemRandom::new()).unwrap()
}

fn config_error(result: Result<Pkcs11MasterKey, KeyError>) -> String {
    match result {
        Err(KeyError::Config(message)) => message,
        Err(e) => panic!("expected KeyError::Config, got {e:?}"),
        Ok(key) => panic!("expected KeyError::Config, got {key:?}"),
    }
}

const TABLE: &str = "arn:aws:dynamodb:us-east-1:1:table/a";

#[test]
fn hsm_key_is_created_wraps_in_the_token_and_is_found_again() {
    let hsm = hsm();
    let master = hsm.open("master-a", true);
    assert_eq!(master.id(), "pkcs11:moat-test/master-a");
    let k = random_key();
    let wrapped = master.wrap(&k, TABLE, "resource-key").unwrap();
    assert_eq!(wrapped.len(), 1 + 12 + 32 + 16);
    assert_eq!(wrapped[0], 1);
    assert_eq!(master.unwrap(&wrapped, TABLE, "resource-key").unwrap(), k);
    // A fresh IV every time.
    assert_ne!(master.wrap(&k, TABLE, "resource-key").unwrap(), wrapped);

    // Bound to its resource, its purpose and its master key.
    let other_table = "arn:aws:dynamodb:us-east-1:1:table/b";
    assert!(matches!(
        master.unwrap(&wrapped, other_table, "resource-key"),
        Err(KeyError::Unwrap)
    ));
    assert!(matches!(
        master.unwrap(&wrapped, TABLE, "database-key"),
        Err(KeyError::Unwrap)
    ));
    let other = hsm.open("master-a-other", true);
    assert!(matches!(
        other.unwrap(&wrapped, TABLE, "resource-key"),
        Err(KeyError::Unwrap)
    ));
    // Tamper evidence: every flipped byte, and a truncation.
    for i in 0..wrapped.len() {
        let mut flipped = wrapped.clone();
        flipped[i] ^= 1;
        assert!(
            master.unwrap(&flipped, TABLE, "resource-key").is_err(),
            "byte {i} flipped"
        );
    }
    assert!(master
        .unwrap(&wrapped[..wrapped.len() - 1], TABLE, "resource-key")
        .is_err());
    let check = key_check_value(&master).unwrap();
    assert!(!matches_check_value(&other, &check));

    // Thread-safe: one key used from several threads at once.
    let master = Arc::new(master);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let master = Arc::clone(&master);
            std::thread::spawn(move || {
                for i in 0..20 {
                    let k = random_key();
                    let resource = format!("arn:t{t}:{i}");
                    let w = master.wrap(&k, &resource, "resource-key").unwrap();
                    assert_eq!(master.unwrap(&w, &resource, "resource-key").unwrap(), k);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop((master, other));

    // Reopened without create_key: the same key, found by its label.
    let again = hsm.open("master-a", false);
    assert_eq!(again.unwrap(&wrapped, TABLE, "resource-key").unwrap(), k);
    assert!(matches_check_value(&again, &check));
}

#[test]
fn hsm_key_never_leaves_the_token() {
    let hsm = hsm();
    let master = hsm.open("master-c", true);

    // Look at the object with a session of our own.
    let ctx = Pkcs11::new(MODULE).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == TOKEN)
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        // `master` keeps the token logged in.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(b"master-c".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "exactly one key labelled master-c");
    let attrs = session
        .get_attributes(
            found[0],
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::ValueLen,
            ],
        )
        .unwrap();
    let mut seen = 0;
    for attr in &attrs {
        match attr {
            Attribute::Extractable(v) => assert!(!v, "CKA_EXTRACTABLE"),
            Attribute::Sensitive(v) => assert!(v, "CKA_SENSITIVE"),
            Attribute::NeverExtractable(v) => assert!(v, "CKA_NEVER_EXTRACTABLE"),
            Attribute::AlwaysSensitive(v) => assert!(v, "CKA_ALWAYS_SENSITIVE"),
            Attribute::Token(v) => assert!(v, "CKA_TOKEN"),
            Attribute::Private(v) => assert!(v, "CKA_PRIVATE"),
            Attribute::ValueLen(n) => assert_eq!(**n, 32, "CKA_VALUE_LEN"),
            other => panic!("unexpected attribute {other:?}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 7, "every attribute asked for was returned: {attrs:?}");
    // The value itself cannot be read.
    let value = session.get_attributes(found[0], &[AttributeType::Value]);
    assert!(
        !matches!(&value, Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(_)))),
        "CKA_VALUE of the master key was readable"
    );
    drop(session);
    // Still usable after another session of this process closed.
    let k = random_key();
    let w = master.wrap(&k, TABLE, "resource-key").unwrap();
    assert_eq!(master.unwrap(&w, TABLE, "resource-key").unwrap(), k);
}

#[test]
fn key_ring_rotates_between_software_and_hsm_keys() {
    let hsm = hsm();
    let dir = hsm.temp("ring");
    let soft_key = random_key();
    let soft = || Box::new(SoftwareMasterKey::new("software", soft_key.clone()));

    let mut ring = KeyRing::open(&dir, soft()).unwrap();
    let db_file = dir.join("t.dbkey");
    let db_key = ring.database_key(TABLE, &db_file).unwrap();
    let rk = ring.resource_key(TABLE).unwrap();

    // Software -> HSM.
    assert_eq!(
        ring.rotate_master(Box::new(hsm.open("master-d", true)))
            .unwrap(),
        1
    );
    assert_eq!(ring.resource_key(TABLE).unwrap(), rk);
    drop(ring);
    assert!(
        KeyRing::open(&dir, soft()).is_err(),
        "old software key retired"
    );
    let mut ring = KeyRing::open(&dir, Box::new(hsm.open("master-d", false))).unwrap();
    assert_eq!(ring.resource_key(TABLE).unwrap(), rk);
    assert_eq!(ring.database_key(TABLE, &db_file).unwrap(), db_key);
    let other = hsm.open("master-d-other", true);
    assert!(KeyRing::open(&dir, Box::new(other)).is_err());

    // HSM -> software.
    let new_soft = random_key();
    assert_eq!(
        ring.rotate_master(Box::new(SoftwareMasterKey::new(
            "software",
            new_soft.clone()
        )))
        .unwrap(),
        1
    );
    drop(ring);
    assert!(KeyRing::open(&dir, Box::new(hsm.open("master-d", false))).is_err());
    let ring = KeyRing::open(&dir, Box::new(SoftwareMasterKey::new("software", new_soft))).unwrap();
    assert_eq!(ring.resource_key(TABLE).unwrap(), rk);
    assert_eq!(ring.database_key(TABLE, &db_file).unwrap(), db_key);

    // A ring created under the HSM key from the start.
    let dir2 = hsm.temp("ring-hsm");
    let ring = KeyRing::open(&dir2, Box::new(hsm.open("master-d", false))).unwrap();
    let rk2 = ring.resource_key(TABLE).unwrap();
    drop(ring);
    let ring = KeyRing::open(&dir2, Box::new(hsm.open("master-d", false))).unwrap();
    assert_eq!(ring.resource_key(TABLE).unwrap(), rk2);
}

#[test]
fn bad_pin_missing_token_key_or_module_are_clear_config_errors() {
    let hsm = hsm();
    let wrong_pin = "wrong-pin-9731";
    let with_pin = |pin: &str| Pkcs11Config {
        pin: pin.into(),
        ..hsm.config("master-e", true)
    };

    // A wrong PIN, with no login live in this process, then with one.
    let message = config_error(Pkcs11MasterKey::open(&with_pin(wrong_pin)));
    assert_eq!(
        message,
        "login to the HSM token 'moat-test' failed: the PIN is incorrect"
    );
    let live = Pkcs11MasterKey::open(&with_pin(PIN)).unwrap();
    let result = Pkcs11MasterKey::open(&with_pin(wrong_pin));
    let debug = format!("{result:?}");
    assert_eq!(config_error(result), message);
    assert!(!debug.contains(wrong_pin), "{debug}");
    assert!(!format!("{live:?}").contains(PIN));
    let config_debug = format!("{:?}", with_pin(wrong_pin));
    assert!(!config_debug.contains(wrong_pin), "{config_debug}");
    assert!(config_debug.contains("<redacted>"));
    drop(live);

    let missing_token = Pkcs11Config {
        token_label: "no-such-token".into(),
        ..hsm.config("master-e", true)
    };
    let message = config_error(Pkcs11MasterKey::open(&missing_token));
    assert_eq!(message, "the HSM token 'no-such-token' is not present");

    let message = config_error(Pkcs11MasterKey::open(&hsm.config("no-such-key", false)));
    assert!(
        message.contains("holds no AES key labelled 'no-such-key'"),
        "{message}"
    );
    assert!(!message.contains(PIN));

    let missing_module = Pkcs11Config {
        module: "/nonexistent/libpkcs11.so".into(),
        ..hsm.config("master-e", true)
    };
    let message = config_error(Pkcs11MasterKey::open(&missing_module));
    assert!(
        message.starts_with("the PKCS#11 module /nonexistent/libpkcs11.so cannot be loaded"),
        "{message}"
    );
    let not_a_module = Pkcs11Config {
        module: hsm.dir.join("softhsm2.conf"),
        ..hsm.config("master-e", true)
    };
    let message = config_error(Pkcs11MasterKey::open(&not_a_module));
    assert!(message.contains("cannot be loaded"), "{message}");
}
