//! Maglev tables as BPF maps: each table is its own array map, filled
//! through mmap before anyone can see it, then published with one update of
//! an array-of-maps: an atomic pointer swap. Packets see the old table or
//! the new one, never a mix.
//!
//! Two outer maps (see LETHE_FIXED_TABLE_SIZE in bpf/abi.h): tables of the
//! fixed size go into `tables_fixed`, whose inner maps all have that size
//! so the program looks slots up inline; any other size into `tables`.
//! A table id names one table, in one of the two; the VIP record's
//! VIP_F_FIXED_TABLE says which.

use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use super::mmap::MapMmap;
use super::DataplaneError;
use crate::abi;

/// The mmap stride of a 4-byte value (see `mmap::stride`).
const ELEM_STRIDE: usize = 8;

/// Must equal the templates' map_flags in bpf/maps.h (struct maglev_table,
/// struct maglev_table_fixed): the kernel refuses inner maps whose flags
/// differ. (Not BPF_F_RDONLY_PROG: the kernel refuses writable mmaps of
/// such maps.)
const TABLE_FLAGS: u32 = libbpf_sys::BPF_F_INNER_MAP | libbpf_sys::BPF_F_MMAPABLE;
const FIXED_TABLE_FLAGS: u32 = libbpf_sys::BPF_F_MMAPABLE;

/// Whether a table of `size` slots goes into `tables_fixed`.
pub fn is_fixed(size: usize) -> bool {
    size == abi::FIXED_TABLE_SIZE as usize
}

/// A new, unpublished table map holding `slots` (backend ids), made for
/// the outer map its size goes into.
pub fn create(slots: &[u32]) -> Result<MapHandle, DataplaneError> {
    Ok(Blank::new(slots.len())?.fill(slots))
}

/// A table map made and mapped ahead of its contents, its pages faulted
/// in: filling it is the only work left when a change needs a table.
/// Making one (the kernel allocating and zeroing 512 KiB for 65537 slots,
/// the mapping, its page faults) took ~0.3 ms of the ~4 ms a one-backend
/// change took to reach the maps; the data plane keeps one of the fixed
/// size ready (`Installed::spare`).
pub struct Blank {
    map: MapHandle,
    mem: MapMmap,
}

impl std::fmt::Debug for Blank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blank({} slots)", self.size())
    }
}

impl Blank {
    pub fn new(size: usize) -> Result<Blank, DataplaneError> {
        let map = new_map(size)?;
        let mem = MapMmap::populated(map.as_fd(), size * ELEM_STRIDE, "mmap of a new table")?;
        Ok(Blank { map, mem })
    }

    pub fn size(&self) -> usize {
        self.map.max_entries() as usize
    }

    /// The table holding `slots`, one per slot of this map.
    pub fn fill(self, slots: &[u32]) -> MapHandle {
        assert_eq!(slots.len(), self.size(), "a table fills every slot");
        // Element i: the id in its first 4 bytes, 4 bytes of padding.
        let words = slots.iter().map(|id| {
            let mut w = [0u8; ELEM_STRIDE];
            w[..4].copy_from_slice(&id.to_ne_bytes());
            u64::from_ne_bytes(w)
        });
        self.mem.write_u64s(0, words);
        self.map
    }
}

fn new_map(size: usize) -> Result<MapHandle, DataplaneError> {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: if is_fixed(size) {
            FIXED_TABLE_FLAGS
        } else {
            TABLE_FLAGS
        },
        ..Default::default()
    };
    MapHandle::create(
        MapType::Array,
        Some("lethe_table"),
        4,
        4,
        size as u32,
        &opts,
    )
    .map_err(|e| DataplaneError::map("lethe_table", "create", e))
}

/// Publishes `table` as table `table_id`. The kernel waits for running
/// programs before the call returns (synchronize_rcu on map-in-map
/// updates), so once it does, no packet still reads the previous table.
pub fn publish(
    tables: &dyn MapCore,
    table_id: u32,
    table: &MapHandle,
) -> Result<(), DataplaneError> {
    let fd = table.as_fd().as_raw_fd() as u32;
    tables
        .update(&table_id.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| DataplaneError::map("tables", "publish", e))
}

/// The two outer maps.
#[derive(Clone, Copy)]
pub struct Tables<'a> {
    /// Any size (`tables`).
    pub sized: &'a dyn MapCore,
    /// abi::FIXED_TABLE_SIZE slots (`tables_fixed`).
    pub fixed: &'a dyn MapCore,
}

impl Tables<'_> {
    fn outer(&self, fixed: bool) -> &dyn MapCore {
        if fixed {
            self.fixed
        } else {
            self.sized
        }
    }

    /// Publishes each `(table_id, table)` (from `create`) in the outer map
    /// of its size, with one batched update per outer map: the kernel
    /// waits for running programs once per update (as for `publish`), not
    /// once per table. Table ids are distinct. A kernel without batched
    /// updates of array-of-maps gets them one by one.
    pub fn publish_all(&self, tables: &[(u32, &MapHandle)]) -> Result<(), DataplaneError> {
        for fixed in [false, true] {
            let group: Vec<&(u32, &MapHandle)> = tables
                .iter()
                .filter(|(_, t)| is_fixed(t.max_entries() as usize) == fixed)
                .collect();
            if group.is_empty() {
                continue;
            }
            let keys: Vec<u8> = group.iter().flat_map(|(id, _)| id.to_ne_bytes()).collect();
            let fds: Vec<u8> = group
                .iter()
                .flat_map(|(_, t)| (t.as_fd().as_raw_fd() as u32).to_ne_bytes())
                .collect();
            let outer = self.outer(fixed);
            let batched = outer.update_batch(
                &keys,
                &fds,
                group.len() as u32,
                MapFlags::ANY,
                MapFlags::ANY,
            );
            if batched.is_err() {
                for (id, table) in group {
                    publish(outer, *id, table)?;
                }
            }
        }
        Ok(())
    }

    /// Unpublishes table `table_id` from both outer maps.
    pub fn remove(&self, table_id: u32) -> Result<(), DataplaneError> {
        remove(self.sized, table_id)?;
        remove(self.fixed, table_id)
    }

    /// Unpublishes table `table_id` from the outer map `fixed` does not
    /// name: what a record with that flag cannot lead to.
    pub fn remove_other(&self, table_id: u32, fixed: bool) -> Result<(), DataplaneError> {
        remove(self.outer(!fixed), table_id)
    }

    /// Reads table `table_id` back from the outer map `fixed` names.
    pub fn read(&self, table_id: u32, fixed: bool) -> Result<Option<Vec<u32>>, DataplaneError> {
        read(self.outer(fixed), table_id)
    }
}

/// Unpublishes table `table_id`: packets of its VIP find no backend.
pub fn remove(tables: &dyn MapCore, table_id: u32) -> Result<(), DataplaneError> {
    match tables.delete(&table_id.to_ne_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataplaneError::map("tables", "delete", e)),
    }
}

/// Reads a published table back: the backend id of every slot.
pub fn read(tables: &dyn MapCore, table_id: u32) -> Result<Option<Vec<u32>>, DataplaneError> {
    let Some(id) = tables
        .lookup(&table_id.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| DataplaneError::map("tables", "lookup", e))?
    else {
        return Ok(None);
    };
    let id = u32::from_ne_bytes(id.try_into().expect("map id is 4 bytes"));
    let map =
        MapHandle::from_map_id(id).map_err(|e| DataplaneError::map("lethe_table", "open", e))?;
    let n = map.max_entries() as usize;
    let mem = MapMmap::new(
        map.as_fd(),
        n * ELEM_STRIDE,
        false,
        "mmap of a published table",
    )?;
    let slots = mem
        .bytes()
        .chunks_exact(ELEM_STRIDE)
        .map(|e| u32::from_ne_bytes(e[..4].try_into().expect("4 bytes")))
        .collect();
    Ok(Some(slots))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An array-of-maps of `n` entries taking tables of any size, as
    /// `tables` does.
    fn outer(n: u32) -> MapHandle {
        let template = create(&[0; 3]).unwrap();
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            inner_map_fd: template.as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        MapHandle::create(MapType::ArrayOfMaps, Some("outer"), 4, 4, n, &opts).unwrap()
    }

    #[test]
    #[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
    fn publish_all_publishes_every_table_or_says_which_failed() {
        let sized = outer(4);
        let fixed = outer(4);
        let tables = Tables {
            sized: &sized,
            fixed: &fixed,
        };
        let made: Vec<(u32, MapHandle)> = [(0, 5u32), (2, 7), (3, 9)]
            .into_iter()
            .map(|(id, first)| (id, create(&[first, 1, 2]).unwrap()))
            .collect();
        let refs: Vec<(u32, &MapHandle)> = made.iter().map(|(id, m)| (*id, m)).collect();
        tables.publish_all(&refs).unwrap();
        for (id, first) in [(0, 5), (2, 7), (3, 9)] {
            assert_eq!(tables.read(id, false).unwrap(), Some(vec![first, 1, 2]));
        }
        assert_eq!(tables.read(1, false).unwrap(), None);

        // Table id 4 is past the outer map: an error naming the publish,
        // and the tables before it are in place.
        let again = create(&[8, 8, 8]).unwrap();
        let bad = create(&[6, 6, 6]).unwrap();
        let err = tables.publish_all(&[(1, &again), (4, &bad)]).unwrap_err();
        assert!(err.to_string().contains("tables"), "{err}");
        assert_eq!(tables.read(1, false).unwrap(), Some(vec![8, 8, 8]));
    }
}
