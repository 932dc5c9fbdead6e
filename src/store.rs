//! The saved configuration: `<state dir>/config.json`, written atomically
//! (temp file, fsync, rename, fsync of the directory), so a crash leaves
//! the old file or the new one, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::Config;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no valid configuration")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Store {
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct HealthEntry {
    vip: String,
    backend: std::net::IpAddr,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The saved configuration, or None on first start.
    pub fn load(&self) -> Result<Option<Config>, StoreError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    what: "reading",
                    path,
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source })
    }

    pub fn save(&self, config: &Config) -> Result<(), StoreError> {
        let mut text = serde_json::to_vec_pretty(config).expect("configs serialise");
        text.push(b'\n');
        self.write("config.json", &text)
    }

    /// `health.json`: the checked backends that are down, (VIP name,
    /// address). Written at every health transition; read at start only
    /// when the pinned tables cannot say (fresh maps: a move to another
    /// layout, or after a reboot), so that a restart does not send traffic
    /// to backends that were down.
    pub fn health_path(&self) -> PathBuf {
        self.dir.join("health.json")
    }

    pub fn save_down(&self, down: &[(String, std::net::IpAddr)]) -> Result<(), StoreError> {
        let list: Vec<HealthEntry> = down
            .iter()
            .map(|(vip, backend)| HealthEntry {
                vip: vip.clone(),
                backend: *backend,
            })
            .collect();
        let mut text = serde_json::to_vec_pretty(&list).expect("entries serialise");
        text.push(b'\n');
        self.write("health.json", &text)
    }

    /// The down backends saved last; none when nothing was saved.
    pub fn load_down(&self) -> Result<Vec<(String, std::net::IpAddr)>, StoreError> {
        let path = self.health_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    what: "reading",
                    path,
                    source,
                })
            }
        };
        let list: Vec<HealthEntry> =
            serde_json::from_str(&text).map_err(|source| StoreError::Corrupt { path, source })?;
        Ok(list.into_iter().map(|e| (e.vip, e.backend)).collect())
    }

    /// Writes `name` in the state directory atomically: a temp file,
    /// fsync, rename (the commit), fsync of the directory.
    fn write(&self, name: &str, text: &[u8]) -> Result<(), StoreError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { what, path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(text).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io("renaming onto", &path))?;
        // The rename is the commit: the new file is what a restart reads,
        // so an error after it must not refuse the change (the caller
        // would restore the old maps under the new saved file).
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "saved, but syncing the directory failed: a crash now may bring back the previous file");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lethe-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saves_and_loads_and_leaves_no_temp_file() {
        let dir = tempdir("roundtrip");
        let store = Store::new(&dir);
        assert!(store.load().unwrap().is_none());
        let c: Config = serde_json::from_str(
            r#"{"hash_seed": 9, "vips": [{"name": "a", "address": "10.0.0.1", "port": 1, "protocol": "tcp"}]}"#,
        )
        .unwrap();
        store.save(&c).unwrap();
        assert_eq!(store.load().unwrap(), Some(c.clone()));
        store.save(&Config::default()).unwrap();
        assert_eq!(store.load().unwrap(), Some(Config::default()));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_config() {
        let dir = tempdir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.json"), "{\"vips\": [").unwrap();
        assert!(matches!(
            Store::new(&dir).load(),
            Err(StoreError::Corrupt { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
