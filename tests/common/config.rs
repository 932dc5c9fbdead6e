//! The configuration the packet tests run against: a VIP for every path
//! through the program (modes, families, all-ports, sticky, redirect, and
//! every way a backend can be unreachable). Addresses refer to
//! `topology.rs`.

use lethe::config::Config;

pub fn fixture_config() -> Config {
    serde_json::from_value(serde_json::json!({
        "hash_seed": 0x5eed,
        "gue_port": 6081,
        "vips": [
            {"name": "web4", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]},
            {"name": "web6", "address": "fd00:100::1", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "fd00:1::11"}, {"address": "fd00:1::12"}, {"address": "fd00:1::13", "weight": 2}]},
            {"name": "any4", "address": "10.100.0.2", "port": 0, "protocol": "tcp", "mode": "ipip",
             "backends": [{"address": "10.9.0.1"}, {"address": "10.9.0.2"}]},
            {"name": "alt4", "address": "10.100.0.2", "port": 8080, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.1.0.11"}]},
            {"name": "dns4", "address": "10.100.0.1", "port": 53, "protocol": "udp", "mode": "ipip",
             "backends": [{"address": "fd00:9::1"}, {"address": "fd00:9::2"}]},
            {"name": "tun6", "address": "fd00:100::2", "port": 443, "protocol": "tcp", "mode": "ipip",
             "backends": [{"address": "fd00:9::1"}, {"address": "fd00:9::2"}, {"address": "fd00:9::3"}]},
            {"name": "sticky4", "address": "10.100.0.3", "port": 443, "protocol": "tcp", "mode": "dsr",
             "sticky": true,
             "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]},
            {"name": "far4", "address": "10.100.0.4", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.2.0.11"}]},
            {"name": "far6", "address": "fd00:100::4", "port": 80, "protocol": "tcp", "mode": "ipip",
             "backends": [{"address": "fd00:2::11"}]},
            {"name": "unres4", "address": "10.100.0.5", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.1.0.99"}]},
            {"name": "unreach4", "address": "10.100.0.6", "port": 80, "protocol": "tcp", "mode": "ipip",
             "backends": [{"address": "192.0.2.1"}]},
            {"name": "unreach6", "address": "fd00:100::6", "port": 80, "protocol": "tcp", "mode": "ipip",
             "backends": [{"address": "2001:db8:dead::1"}]},
            {"name": "behindgw4", "address": "10.100.0.7", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.9.0.1"}]},
            {"name": "empty4", "address": "10.100.0.8", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": []},
            {"name": "notx4", "address": "10.100.0.9", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.3.0.11"}]},
            {"name": "drained4", "address": "10.100.0.10", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.1.0.11", "weight": 0}]},
            {"name": "small4", "address": "10.100.0.11", "port": 53, "protocol": "udp", "mode": "ipip",
             "table_size": 7,
             "backends": [{"address": "10.9.0.1"}, {"address": "10.9.0.2"}, {"address": "10.9.0.3"}]},
            {"name": "nat4", "address": "10.100.0.20", "port": 80, "protocol": "tcp", "mode": "nat",
             "backends": [{"address": "10.1.0.11", "port": 8080}, {"address": "10.1.0.12"}]},
            {"name": "nat6", "address": "fd00:100::20", "port": 443, "protocol": "tcp", "mode": "nat",
             "backends": [{"address": "fd00:1::11", "port": 8443}]},
            {"name": "natudp4", "address": "10.100.0.21", "port": 53, "protocol": "udp", "mode": "nat",
             "backends": [{"address": "10.1.0.13", "port": 5353}]},
            {"name": "natudp6", "address": "fd00:100::21", "port": 53, "protocol": "udp", "mode": "nat",
             "backends": [{"address": "fd00:1::13", "port": 5353}]},
            {"name": "natall4", "address": "10.100.0.22", "port": 0, "protocol": "udp", "mode": "nat",
             "backends": [{"address": "10.2.0.11"}]},
            {"name": "natfar4", "address": "10.100.0.23", "port": 80, "protocol": "tcp", "mode": "nat",
             "backends": [{"address": "192.0.2.5", "port": 80}]},
            {"name": "natnn4", "address": "10.100.0.24", "port": 80, "protocol": "tcp", "mode": "nat",
             "backends": [{"address": "10.1.0.99", "port": 8080}]},
            {"name": "natnn6", "address": "fd00:100::24", "port": 80, "protocol": "tcp", "mode": "nat",
             "backends": [{"address": "fd00:1::99", "port": 8080}]},
            {"name": "gue4", "address": "10.100.0.30", "port": 80, "protocol": "tcp", "mode": "gue",
             "backends": [{"address": "10.9.0.1"}, {"address": "10.9.0.2"}]},
            {"name": "gue6", "address": "fd00:100::30", "port": 443, "protocol": "tcp", "mode": "gue",
             "backends": [{"address": "fd00:9::1"}, {"address": "fd00:9::2"}]},
            {"name": "gue4in6", "address": "10.100.0.31", "port": 53, "protocol": "udp", "mode": "gue",
             "backends": [{"address": "fd00:9::1"}]},
            {"name": "gue6udp", "address": "fd00:100::31", "port": 53, "protocol": "udp", "mode": "gue",
             "backends": [{"address": "fd00:2::11"}]},
            {"name": "narrow6", "address": "fd00:100::32", "port": 80, "protocol": "tcp", "mode": "ipip",
             "backends": [{"address": "fd00:9:13::1"}]}
        ]
    }))
    .expect("fixture config parses")
}
