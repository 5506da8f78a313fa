//! Environments: keep, router, bake, strategy, health checks, and how their parts fit together.

use super::*;

impl Checker {
    pub(super) fn environments(&mut self, node: &Node) -> Vec<(EnvironmentSpec, Node)> {
        let Value::Map(entries) = &node.value else {
            if node.value != Value::Null {
                self.error(
                    node,
                    "environments",
                    format!(
                        "`environments` must be a mapping of name to environment, found {}",
                        node.kind_name()
                    ),
                    None,
                );
            }
            return Vec::new();
        };
        let mut out: Vec<(EnvironmentSpec, Node)> = Vec::new();
        for (key, value) in entries {
            let Some(name) = self.name(key, "environments") else {
                continue;
            };
            let path = format!("environments[{name}]");
            if out.iter().any(|(e, _)| e.name == name) {
                self.error(
                    key,
                    &path,
                    format!("environment `{name}` is described twice"),
                    None,
                );
                continue;
            }
            let mut spec = EnvironmentSpec::named(&name);
            if value.value != Value::Null {
                let Some(fields) = self.fields(value, &path, "an environment", ENVIRONMENT_KEYS)
                else {
                    continue;
                };
                self.environment(&mut spec, value, &fields);
            }
            out.push((spec, key.clone()));
        }
        out
    }

    /// Fills `spec` from an environment's mapping and checks that its parts fit together.
    pub(super) fn environment(
        &mut self,
        spec: &mut EnvironmentSpec,
        node: &Node,
        fields: &Fields<'_>,
    ) {
        if let Some(k) = fields.some("keep") {
            match self.uint(k, &fields.field("keep"), 100) {
                Some(0) => self.error(
                    k,
                    &fields.field("keep"),
                    "`keep` must be at least 1: the live release is always kept",
                    None,
                ),
                Some(n) => spec.keep = n,
                None => {}
            }
        }
        if let Some(target) = fields.some("target") {
            spec.target = self.target(target, &fields.field("target"));
        }
        let routing = spec.target.as_ref().map(TargetSpec::routing);
        let health_node = fields.some("health");
        if let Some(h) = health_node
            && let Some(health) = self.health(h, &fields.field("health"))
        {
            spec.health = health;
        } else if routing == Some(Routing::Router) {
            // A port to check: its default check is that it accepts connections.
            spec.health.check = HealthCheck::Tcp;
        }
        if let Some(r) = fields.some("router")
            && let Some(f) = self.fields(r, &fields.field("router"), "a router", ROUTER_KEYS)
            && let Some(listen) = self.required(&f, r, "listen", "a router")
        {
            let field = f.field("listen");
            if let Some(text) = self.string(listen, &field) {
                match text.parse::<std::net::SocketAddr>() {
                    Ok(_) => spec.router = Some(RouterSpec { listen: text }),
                    Err(_) => self.error(
                        listen,
                        &field,
                        format!("`{text}` is not an address to listen on"),
                        Some("write IP:PORT, for example 127.0.0.1:8102".into()),
                    ),
                }
            }
        }
        if let Some(b) = fields.some("bake") {
            spec.bake = self.duration(b, &fields.field("bake")).unwrap_or(spec.bake);
        }
        if let Some(p) = fields.some("keep_previous_running") {
            spec.keep_previous_running = self.duration(p, &fields.field("keep_previous_running"));
        }
        if let Some(n) = fields.some("strategy")
            && let Some(f) = self.fields(n, &fields.field("strategy"), "a strategy", STRATEGY_KEYS)
            && let Some(c) = f.some("canary")
        {
            spec.canary = self.canary(c, &f.field("canary"));
            let kind = spec.target.as_ref().map(TargetSpec::kind);
            if kind == Some(gantry_model::TargetKind::Lambda)
                && let Some(canary) = &mut spec.canary
            {
                // The alias splits calls at random and gantry's router is not in the path:
                // no named users, no measured analysis. Alarms and approvals judge it.
                let cf = f.field("canary");
                let (users, measured) = (
                    canary.users.is_some(),
                    canary.analysis.max_error_rate_ppm.is_some()
                        || canary.analysis.max_p99_ms.is_some()
                        || canary.analysis.compare_to_stable,
                );
                canary.analysis.min_requests = 0;
                if users {
                    self.error(
                        c,
                        &cf,
                        "a Lambda canary cannot pick users: the alias's weights split calls at random",
                        Some("remove `users`; use `approval: true` steps and alarms to judge it".into()),
                    );
                }
                if measured {
                    self.error(
                        c,
                        &cf,
                        "a Lambda canary's analysis cannot read error rates or latency: gantry's router is not in a Lambda's path",
                        Some("post alarms (CloudWatch via SNS, Alertmanager) to /api/projects/PROJECT/environments/ENV/alarm: a firing alarm aborts the canary".into()),
                    );
                }
            } else if spec.canary.is_some() && routing != Some(Routing::Router) {
                self.error(
                    n,
                    &fields.field("strategy"),
                    "a canary splits traffic in gantry's router (`process` and `docker` targets) or in a Lambda alias; a `command` target has neither",
                    None,
                );
            }
        }
        // The parts must fit together.
        match routing {
            Some(Routing::Router) if spec.router.is_none() && fields.get("router").is_none() => {
                self.error(
                    fields.some("target").unwrap_or(node),
                    &fields.field("target"),
                    format!(
                        "a `{}` target serves users through gantry's router, and this environment has none",
                        spec.target.as_ref().map_or("", |t| t.kind().name())
                    ),
                    Some("add `router: { listen: 127.0.0.1:8102 }` (any free address)".into()),
                );
            }
            Some(Routing::Itself) => {
                if let HealthCheck::Http { .. } | HealthCheck::Tcp = spec.health.check {
                    self.error(
                        health_node.unwrap_or(node),
                        &fields.field("health"),
                        "`http` and `tcp` checks need the release's port, which `process` and `docker` targets have",
                        Some("check a `command` target with `health: { command: ./check.sh }`".into()),
                    );
                }
            }
            _ => {}
        }
    }

    pub(super) fn health(&mut self, node: &Node, path: &str) -> Option<HealthSpec> {
        let f = self.fields(node, path, "a health check", HEALTH_KEYS)?;
        let mut spec = EnvironmentSpec::named("").health;
        let mut ok = true;
        let kinds: Vec<&str> = ["http", "tcp", "command"]
            .into_iter()
            .filter(|k| f.some(k).is_some())
            .collect();
        if kinds.len() > 1 {
            self.error(
                f.some(kinds[1]).unwrap_or(node),
                &f.field(kinds[1]),
                format!(
                    "a health check is one of `http`, `tcp` or `command`; this one has `{}` and `{}`",
                    kinds[0], kinds[1]
                ),
                None,
            );
            ok = false;
        } else if let Some(h) = f.some("http") {
            match self.string(h, &f.field("http")) {
                Some(text) if text.starts_with('/') => {
                    spec.check = HealthCheck::Http { path: text }
                }
                Some(text) => {
                    self.error(
                        h,
                        &f.field("http"),
                        format!("`{text}` is not a path"),
                        Some("write the path the check requests, for example /healthz".into()),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        } else if let Some(t) = f.some("tcp") {
            match self.bool(t, &f.field("tcp")) {
                Some(true) => spec.check = HealthCheck::Tcp,
                Some(false) => spec.check = HealthCheck::None,
                None => ok = false,
            }
        } else if let Some(c) = f.some("command") {
            match self.run_text(c, &f.field("command")) {
                Some(command) => spec.check = HealthCheck::Command { command },
                None => ok = false,
            }
        }
        if let Some(t) = f.some("timeout") {
            match self.duration(t, &f.field("timeout")) {
                Some(d) => spec.timeout = d,
                None => ok = false,
            }
        }
        if let Some(i) = f.some("interval") {
            match self.duration(i, &f.field("interval")) {
                Some(d) => spec.interval = d,
                None => ok = false,
            }
        }
        ok.then_some(spec)
    }
}
