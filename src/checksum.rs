//! Internet checksums (RFC 1071), for the model and for tests that verify
//! what the kernel program wrote.

/// One's-complement sum of 16-bit big-endian words, folded; odd tail padded.
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum to store in a header whose checksum field is zero; 0 when
/// the data (with its checksum in place) verifies.
pub fn internet(data: &[u8]) -> u16 {
    fold(sum(data, 0))
}

/// RFC 1624 incremental update, exactly as `csum_replace` in bpf/csum.h:
/// `check`, `from` and `to` are 16-bit words loaded in native byte order
/// from the packet, and the result is stored back the same way.
pub fn replace(check: u16, from: &[u16], to: &[u16]) -> u16 {
    let mut sum = u32::from(!check);
    for (f, t) in from.iter().zip(to) {
        sum += u32::from(!*f) + u32::from(*t);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The 16-bit words of `bytes`, loaded as the BPF program loads them.
pub fn words(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|w| u16::from_ne_bytes([w[0], w[1]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_and_verification() {
        // IPv4 header from RFC 1071-style worked examples.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(internet(&h), 0);
        assert_eq!(internet(&[0x01]), !0x0100);
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let check = u16::from_ne_bytes([h[10], h[11]]);
        let old = words(&h[16..20]);
        h[16..20].copy_from_slice(&[10, 1, 2, 3]);
        let updated = replace(check, &old, &words(&h[16..20]));
        h[10..12].copy_from_slice(&updated.to_ne_bytes());
        assert_eq!(internet(&h), 0, "the updated header verifies");
    }
}
