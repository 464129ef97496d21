//! The privacy-mapper flags: their names by bit, as LiT defines them, and the bitmask helpers
//! the policy, the relay, the config and the ledger table use. Pure data; imports nothing.

/// The privacy flag names by bit (LiT's `session/privacy_flags.go`).
pub const NAMES: [&str; 8] = [
    "ClearPubkeys",
    "ClearAmounts",
    "ClearChanIDs",
    "ClearTimeStamps",
    "ClearChanInitiator",
    "ClearHTLCs",
    "ClearClosingTxIds",
    "ClearNetworkAddresses",
];

/// Bits 0–7: every flag litd knows.
pub const KNOWN: u64 = 0xff;

/// The bitmask of flag names (unknown names, rejected by config validation, add nothing).
pub fn mask(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|n| NAMES.iter().position(|k| k == n))
        .fold(0u64, |m, bit| m | (1 << bit))
}

/// The lowest set bit that litd does not know, as litd reports it.
pub fn unknown_bit(flags: u64) -> Option<u64> {
    let unknown = flags & !KNOWN;
    (unknown != 0).then(|| unknown.trailing_zeros() as u64)
}

/// The text form litcli uses: flag names joined with `|` (empty for full privacy).
pub fn text(flags: u64) -> String {
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

/// [`text`], or `full privacy` when no flag is set (for messages).
pub fn describe(flags: u64) -> String {
    if flags == 0 {
        "full privacy".into()
    } else {
        text(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_unknown_bits() {
        assert_eq!(text(0x81), "ClearPubkeys|ClearNetworkAddresses");
        assert_eq!(unknown_bit(0x81), None);
        assert_eq!(unknown_bit(0x300), Some(8));
    }
}
