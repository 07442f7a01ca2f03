//! The fault schedule of a simulated run, parsed from `--faults`:
//! `action-fail=0.02,ssh-timeout=0.01,health-fail=0.02,node-death=2,slow-drain=0.05,crash=3,flush-fail=0.1,migration-fail=0.1`.

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Faults {
    /// Probability that an install (emerge) fails.
    pub action_fail: f64,
    /// Probability that any remote step times out (nothing happens on the node).
    pub ssh_timeout: f64,
    /// Probability that a node comes back from a change unhealthy.
    pub health_fail: f64,
    /// Nodes that die at a random instant of the rollout.
    pub node_death: u32,
    /// Probability that a request is slow (30-120 s), holding a drain.
    pub slow_drain: f64,
    /// Reconciler crashes at random instants (it restarts from its journal).
    pub crash: u32,
    /// Probability that a memcached flush fails.
    pub flush_fail: f64,
    /// Probability that a release migration's hook fails.
    #[serde(default)]
    pub migration_fail: f64,
}

impl Faults {
    pub fn none() -> Self {
        Faults::default()
    }

    pub fn parse(s: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        if s.trim().is_empty() || s == "none" {
            return Ok(f);
        }
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("fault `{part}` is not key=value"))?;
            let prob = |v: &str| -> Result<f64, String> {
                match v.parse::<f64>() {
                    Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
                    _ => Err(format!("fault {k}={v}: expected a probability between 0 and 1")),
                }
            };
            let count = |v: &str| -> Result<u32, String> {
                v.parse::<u32>().map_err(|_| format!("fault {k}={v}: expected a count"))
            };
            match k.trim() {
                "action-fail" => f.action_fail = prob(v)?,
                "ssh-timeout" => f.ssh_timeout = prob(v)?,
                "health-fail" => f.health_fail = prob(v)?,
                "node-death" => f.node_death = count(v)?,
                "slow-drain" => f.slow_drain = prob(v)?,
                "crash" => f.crash = count(v)?,
                "flush-fail" => f.flush_fail = prob(v)?,
                "migration-fail" => f.migration_fail = prob(v)?,
                other => {
                    return Err(format!(
                        "unknown fault `{other}` (known: action-fail, ssh-timeout, health-fail, node-death, slow-drain, crash, flush-fail, migration-fail)"
                    ));
                }
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Faults;

    #[test]
    fn parses() {
        let f = Faults::parse("action-fail=0.1,crash=2").unwrap();
        assert_eq!((f.action_fail, f.crash), (0.1, 2));
        assert!(Faults::parse("bogus=1").is_err());
        assert!(Faults::parse("action-fail=2").is_err());
        assert_eq!(Faults::parse("none").unwrap(), Faults::none());
    }
}
