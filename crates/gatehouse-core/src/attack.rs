//! What an attack-detecting policy (the WAF) found in a request: the attack types and
//! the rules that matched. The finish phase counts them for the client, so the Top-N
//! attackers show what each attacker tried (docs/protection.md).

/// The attack types and rule ids a policy found in one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attack {
    /// Attack types (`sqli`, `xss`, ...), each once.
    pub kinds: Vec<&'static str>,
    /// The ids of the rules that matched, each once.
    pub rules: Vec<u32>,
}
