//! A project's `schedules`: cron expressions (five fields, or six with seconds first) read on
//! the wall clock of an explicit IANA time zone, each checked where it is written.

use super::*;

/// Parses a cron expression the way the server's schedules read it.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    let fields = text.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "`{text}` has {fields} fields: a schedule has five (minute hour day month weekday), or six with seconds first"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(text)
        .map_err(|e| format!("`{text}` is not a cron expression: {e}"))
}

/// The time zone named `name` (IANA: `UTC`, `Europe/Berlin`).
pub fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name).map_err(|_| format!("`{name}` is not a time zone gantry knows"))
}

impl Checker<'_> {
    pub(super) fn schedules(
        &mut self,
        v: &Spanned<DeValue<'_>>,
        path: &str,
    ) -> Option<Vec<ScheduleConfig>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                v.span(),
                path,
                format!("expected a list of schedules, found {}", kind(v.get_ref())),
                Some(
                    "for example schedules = [{ cron = \"0 3 * * *\", timezone = \"UTC\" }]".into(),
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.schedule(item, &format!("{path}[{i}]")) {
                Some(s) if out.contains(&s) => {
                    self.error(
                        item.span(),
                        &format!("{path}[{i}]"),
                        "the same schedule twice would start each run twice".into(),
                        None,
                    );
                    ok = false;
                }
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn schedule(&mut self, v: &Spanned<DeValue<'_>>, path: &str) -> Option<ScheduleConfig> {
        let t = self.sub(v, path)?;
        let (mut cron, mut timezone, mut branch) = (None, None, None);
        let mut vars = std::collections::BTreeMap::new();
        let mut ok = true;
        for (key, value) in self.table(t, path, "a schedule", SCHEDULE_KEYS) {
            let field = format!("{path}.{key}");
            if key == "vars" {
                let Some(table) = self.sub(value, &field) else {
                    ok = false;
                    continue;
                };
                for (name, val) in table {
                    let name: &str = name.get_ref();
                    let f = format!("{field}.{name}");
                    match self.string(val, &f) {
                        Some(text) => match gantry_model::vars::check_given(name, &text) {
                            Ok(()) => {
                                vars.insert(name.to_string(), text);
                            }
                            Err(problem) => {
                                self.error(val.span(), &f, problem, None);
                                ok = false;
                            }
                        },
                        None => ok = false,
                    }
                }
                continue;
            }
            let Some(text) = self.string(value, &field) else {
                ok = false;
                continue;
            };
            let problem = match key {
                "cron" => parse_cron(&text).err().map(|p| (p, "for example cron = \"0 3 * * *\" (03:00 every day), or \"*/30 * * * * *\" (every 30 seconds)")),
                "timezone" => time_zone(&text).err().map(|p| (p, "write an IANA name: \"UTC\", \"Europe/Berlin\", \"America/New_York\"")),
                _ if text.is_empty() || text.contains('*') || text.starts_with("refs/") => {
                    Some((format!("`{text}` is not a branch name"), "a schedule runs one branch: write its name"))
                }
                _ => None,
            };
            if let Some((message, help)) = problem {
                self.error(value.span(), &field, message, Some(help.into()));
                ok = false;
                continue;
            }
            match key {
                "cron" => cron = Some(text),
                "timezone" => timezone = Some(text),
                _ => branch = Some(text),
            }
        }
        if ok && (cron.is_none() || timezone.is_none()) {
            let missing: Vec<&str> = [("cron", cron.is_none()), ("timezone", timezone.is_none())]
                .into_iter()
                .filter_map(|(k, m)| m.then_some(k))
                .collect();
            self.error(
                v.span(),
                path,
                format!("a schedule needs {}", missing.join(" and ")),
                Some("the time zone is never guessed: write timezone = \"UTC\" for UTC".into()),
            );
            return None;
        }
        if !ok {
            return None;
        }
        Some(ScheduleConfig {
            cron: cron?,
            timezone: timezone?,
            branch,
            vars,
        })
    }
}
