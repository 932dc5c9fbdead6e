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
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: if is_fixed(slots.len()) {
            FIXED_TABLE_FLAGS
        } else {
            TABLE_FLAGS
        },
        ..Default::default()
    };
    let map = MapHandle::create(
        MapType::Array,
        Some("lethe_table"),
        4,
        4,
        slots.len() as u32,
        &opts,
    )
    .map_err(|e| DataplaneError::map("lethe_table", "create", e))?;
    let mem = MapMmap::new(
        map.as_fd(),
        slots.len() * ELEM_STRIDE,
        true,
        "mmap of a new table",
    )?;
    for (i, id) in slots.iter().enumerate() {
        mem.write(i * ELEM_STRIDE, &id.to_ne_bytes());
    }
    Ok(map)
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

    /// Publishes `table` (from `create`) as table `table_id` in the outer
    /// map of its size; see `publish`.
    pub fn publish(&self, table_id: u32, table: &MapHandle) -> Result<(), DataplaneError> {
        publish(
            self.outer(is_fixed(table.max_entries() as usize)),
            table_id,
            table,
        )
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
