//! Maglev tables as BPF maps: each table is its own array map, filled
//! through mmap before anyone can see it, then published with one update of
//! the `tables` array-of-maps: an atomic pointer swap. Packets see the old
//! table or the new one, never a mix.

use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use super::mmap::MapMmap;
use super::DataplaneError;

/// The mmap stride of a 4-byte value (see `mmap::stride`).
const ELEM_STRIDE: usize = 8;

/// Must equal the template's map_flags in bpf/maps.h (struct maglev_table):
/// the kernel refuses inner maps whose flags differ. (Not BPF_F_RDONLY_PROG:
/// the kernel refuses writable mmaps of such maps.)
const TABLE_FLAGS: u32 = libbpf_sys::BPF_F_INNER_MAP | libbpf_sys::BPF_F_MMAPABLE;

/// A new, unpublished table map holding `slots` (backend ids).
pub fn create(slots: &[u32]) -> Result<MapHandle, DataplaneError> {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: TABLE_FLAGS,
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
