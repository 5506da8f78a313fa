//! Canary strategies: users, steps and analysis.

use super::*;

impl Checker {
    pub(super) fn canary(&mut self, node: &Node, path: &str) -> Option<CanarySpec> {
        let f = self.fields(node, path, "a canary", CANARY_KEYS)?;
        let mut ok = true;
        let users = match f.some("users") {
            Some(u) => {
                let users = self.users(u, &f.field("users"));
                ok &= users.is_some();
                users
            }
            None => None,
        };
        let mut steps = Vec::new();
        match f.some("steps") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) if !items.is_empty() => {
                let mut last = 0;
                for (i, item) in items.iter().enumerate() {
                    let field = format!("{}[{i}]", f.field("steps"));
                    match self.canary_step(item, &field) {
                        Some(CanaryStep::Weight { percent, pause }) => {
                            if percent < last {
                                self.error(
                                    item,
                                    &field,
                                    format!("weights only grow: {percent}% comes after {last}%"),
                                    Some("users only ever move from stable to the canary; to go back, abort".into()),
                                );
                                ok = false;
                            }
                            last = percent;
                            steps.push(CanaryStep::Weight { percent, pause });
                        }
                        Some(step) => steps.push(step),
                        None => ok = false,
                    }
                }
                if let Some(CanaryStep::Weight { percent: 0, .. }) = steps.first()
                    && users.as_ref().is_none_or(|u| u.allow.is_empty())
                {
                    self.warning(
                        &items[0],
                        &format!("{}[0]", f.field("steps")),
                        "a 0% step sends the canary no one: only named users (`users.allow`) and the X-Gantry-Release header reach it",
                        None,
                    );
                }
            }
            Some(other) => {
                self.error(
                    other,
                    &f.field("steps"),
                    "`steps` lists the canary's steps: `- weight: 10` with `pause: 5m`, or `- approval: true`",
                    None,
                );
                ok = false;
            }
            None => {
                self.required(&f, node, "steps", "a canary");
                ok = false;
            }
        }
        let analysis = match f.some("analysis") {
            Some(a) => {
                let analysis = self.analysis(a, &f.field("analysis"));
                ok &= analysis.is_some();
                analysis.unwrap_or_default()
            }
            None => AnalysisSpec::default(),
        };
        ok.then_some(CanarySpec {
            users,
            steps,
            analysis,
        })
    }

    pub(super) fn users(&mut self, node: &Node, path: &str) -> Option<UserSpec> {
        let f = self.fields(node, path, "a user key", USERS_KEYS)?;
        let key = match (f.some("header"), f.some("cookie")) {
            (Some(h), None) => UserKey::Header(self.string(h, &f.field("header"))?),
            (None, Some(c)) => UserKey::Cookie(self.string(c, &f.field("cookie"))?),
            (Some(_), Some(c)) => {
                self.error(
                    c,
                    &f.field("cookie"),
                    "a user is named by a `header` or a `cookie`, not both",
                    None,
                );
                return None;
            }
            (None, None) => {
                self.error(
                    node,
                    path,
                    "`users` needs `header` (for example X-User) or `cookie` (its name)",
                    None,
                );
                return None;
            }
        };
        let allow = match f.some("allow") {
            Some(a) => self
                .string_list(a, &f.field("allow"))
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
            None => Vec::new(),
        };
        Some(UserSpec { key, allow })
    }

    pub(super) fn canary_step(&mut self, node: &Node, path: &str) -> Option<CanaryStep> {
        let f = self.fields(node, path, "a canary step", CANARY_STEP_KEYS)?;
        if let Some(a) = f.some("approval") {
            if f.some("weight").is_some() || f.some("pause").is_some() {
                self.error(
                    node,
                    path,
                    "an approval step has only `approval: true`; put the weight in its own step",
                    None,
                );
                return None;
            }
            return match self.bool(a, &f.field("approval"))? {
                true => Some(CanaryStep::Approval),
                false => {
                    self.error(
                        a,
                        &f.field("approval"),
                        "write `approval: true`, or leave the step out",
                        None,
                    );
                    None
                }
            };
        }
        let weight = self.required(&f, node, "weight", "a canary step")?;
        let percent = self.uint(weight, &f.field("weight"), 100)?;
        let pause = match f.some("pause") {
            Some(p) => Some(self.duration(p, &f.field("pause"))?),
            None => None,
        };
        Some(CanaryStep::Weight { percent, pause })
    }

    pub(super) fn analysis(&mut self, node: &Node, path: &str) -> Option<AnalysisSpec> {
        let f = self.fields(node, path, "an analysis", ANALYSIS_KEYS)?;
        let mut spec = AnalysisSpec::default();
        let mut ok = true;
        if let Some(r) = f.some("max_error_rate") {
            let field = f.field("max_error_rate");
            match r.as_scalar().and_then(|t| t.parse::<f64>().ok()) {
                Some(v) if (0.0..=1.0).contains(&v) => {
                    spec.max_error_rate_ppm = Some((v * 1_000_000.0).round() as u32)
                }
                _ => {
                    self.error(
                        r,
                        &field,
                        "`max_error_rate` is a share of requests from 0 to 1",
                        Some("for example 0.01 (1% of the canary's answers may be 5xx)".into()),
                    );
                    ok = false;
                }
            }
        }
        if let Some(p) = f.some("max_p99_ms") {
            match self.uint(p, &f.field("max_p99_ms"), 3_600_000) {
                Some(v) => spec.max_p99_ms = Some(u64::from(v)),
                None => ok = false,
            }
        }
        if let Some(m) = f.some("min_requests") {
            match self.uint(m, &f.field("min_requests"), 100_000_000) {
                Some(v) => spec.min_requests = u64::from(v),
                None => ok = false,
            }
        }
        if let Some(c) = f.some("compare_to_stable") {
            match self.bool(c, &f.field("compare_to_stable")) {
                Some(v) => spec.compare_to_stable = v,
                None => ok = false,
            }
        }
        if let Some(d) = f.some("deadline") {
            match self.duration(d, &f.field("deadline")) {
                Some(v) => spec.deadline = v,
                None => ok = false,
            }
        }
        ok.then_some(spec)
    }
}
