//! Counters, through the `metrics` facade: the leaf that the balancer, the plugin runtime, the
//! health checks and the reloads count into. Nothing is recorded unless a recorder is installed
//! (the admin listener installs one, [`crate::admin`], which also documents the names).

/// Count one plugin fault (`kind`: trap, deadline, memory, not-granted, setup, invalid-answer).
pub fn plugin_fault(plugin: &str, kind: &'static str) {
    metrics::counter!("fulcrum_plugin_faults_total", "plugin" => plugin.to_string(), "kind" => kind).increment(1);
}

/// Count one plugin (re)load outcome (`loaded`, `failed`, `removed`).
pub fn plugin_reload(plugin: &str, result: &'static str) {
    metrics::counter!("fulcrum_plugin_reloads_total", "plugin" => plugin.to_string(), "result" => result).increment(1);
}

/// Count one health check's result (`pass`, `fail`).
pub fn health_check(balancer: &str, member: &str, result: &'static str) {
    metrics::counter!(
        "fulcrum_health_checks_total",
        "balancer" => balancer.to_string(),
        "member" => member.to_string(),
        "result" => result
    )
    .increment(1);
}

/// Count a member leaving (`out`) or re-entering (`in`) rotation by its health checks.
pub fn health_transition(balancer: &str, member: &str, to: &'static str) {
    metrics::counter!(
        "fulcrum_health_transitions_total",
        "balancer" => balancer.to_string(),
        "member" => member.to_string(),
        "to" => to
    )
    .increment(1);
}

/// Count one configuration reload (`applied`, `refused`).
pub fn config_reload(result: &'static str) {
    metrics::counter!("fulcrum_config_reloads_total", "result" => result).increment(1);
}
