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

/// What each flag, by bit, lets the Autopilot server see in clear, in words for operators.
pub const CLEARS: [&str; 8] = [
    "pubkeys",
    "amounts",
    "channel IDs",
    "timestamps",
    "channel initiator",
    "HTLCs",
    "closing tx IDs",
    "network addresses",
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

/// The kinds of data the Autopilot server sees in clear through a session: the ones its flags
/// clear, or every kind when the session has no privacy mapper (`Some(false)`). Unknown bits
/// (refused on both faces) add nothing.
pub fn seen_in_clear(flags: u64, privacy_mapper: Option<bool>) -> Vec<&'static str> {
    CLEARS
        .iter()
        .enumerate()
        .filter(|(bit, _)| privacy_mapper == Some(false) || flags & (1 << bit) != 0)
        .map(|(_, k)| *k)
        .collect()
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

    #[test]
    fn what_the_server_sees_in_clear() {
        assert_eq!(
            seen_in_clear(0x0c, Some(true)),
            ["channel IDs", "timestamps"]
        );
        assert_eq!(seen_in_clear(0x03, None), ["pubkeys", "amounts"]);
        assert!(seen_in_clear(0, Some(true)).is_empty());
        assert!(seen_in_clear(0x100, None).is_empty());
        assert_eq!(seen_in_clear(0, Some(false)), CLEARS);
    }
}
