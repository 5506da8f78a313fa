//! Failing test names from the output of common test runners: cargo test, pytest, go test,
//! jest/vitest, and JUnit XML printed or cat'ed into the log. At most [`MAX_NAMES`] are kept.

pub const MAX_NAMES: usize = 20;

#[derive(Debug, Default, Clone)]
pub struct FailingTests {
    names: Vec<String>,
    /// JUnit XML: the name of the `<testcase>` whose body we are in.
    open_case: Option<String>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].to_string())
}

impl FailingTests {
    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn add(&mut self, name: &str) {
        let name = name.trim();
        if !name.is_empty() && self.names.len() < MAX_NAMES && !self.names.iter().any(|n| n == name)
        {
            self.names.push(name.to_string());
        }
    }

    pub fn line(&mut self, line: &str) {
        let t = line.trim();
        // cargo test: `test path::name ... FAILED`
        if let Some(rest) = t.strip_prefix("test ")
            && let Some(name) = rest.strip_suffix(" ... FAILED")
        {
            self.add(name);
            return;
        }
        // pytest: `FAILED tests/test_x.py::test_name - AssertionError: ...`
        if let Some(rest) = t.strip_prefix("FAILED ")
            && rest.contains("::")
        {
            self.add(rest.split(" - ").next().unwrap_or(rest));
            return;
        }
        // go test: `--- FAIL: TestName (0.00s)`
        if let Some(rest) = t.strip_prefix("--- FAIL: ") {
            self.add(rest.split(" (").next().unwrap_or(rest));
            return;
        }
        // jest / vitest: `✕ adds numbers (3 ms)` or `× adds numbers`
        for mark in ["✕ ", "× ", "✗ "] {
            if let Some(rest) = t.strip_prefix(mark) {
                let name = match rest.rfind(" (") {
                    Some(i) if rest.ends_with(')') => &rest[..i],
                    _ => rest,
                };
                self.add(name);
                return;
            }
        }
        // JUnit XML (only lines with a tag can take part)
        if !t.contains('<') {
            return;
        }
        if let Some(i) = t.find("<testcase") {
            let tag = &t[i..];
            let name = attr(tag, "name");
            let class = attr(tag, "classname");
            let full = match (class, name) {
                (Some(c), Some(n)) => Some(format!("{c}.{n}")),
                (None, Some(n)) => Some(n),
                _ => None,
            };
            if tag.contains("/>") && !tag.contains("<failure") && !tag.contains("<error") {
                self.open_case = None;
            } else {
                self.open_case = full;
            }
        }
        if (t.contains("<failure") || t.contains("<error"))
            && let Some(name) = self.open_case.take()
        {
            self.add(&name);
        }
        if t.contains("</testcase>") {
            self.open_case = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(output: &str) -> Vec<String> {
        let mut f = FailingTests::default();
        for l in output.lines() {
            f.line(l);
        }
        f.names()
    }

    #[test]
    fn runners() {
        assert_eq!(
            names("test a::ok ... ok\ntest a::bad ... FAILED\n"),
            ["a::bad"]
        );
        assert_eq!(
            names("FAILED tests/test_m.py::test_div - ZeroDivisionError: division by zero\n"),
            ["tests/test_m.py::test_div"]
        );
        assert_eq!(names("--- FAIL: TestAdd (0.00s)\n"), ["TestAdd"]);
        assert_eq!(
            names("  ✕ adds numbers (3 ms)\n  ✓ fine\n"),
            ["adds numbers"]
        );
        assert_eq!(
            names(
                "<testsuite>\n<testcase classname=\"calc.AddTest\" name=\"adds\" time=\"0.1\">\n<failure message=\"x\"/>\n</testcase>\n<testcase classname=\"calc.AddTest\" name=\"ok\"/>\n</testsuite>\n"
            ),
            ["calc.AddTest.adds"]
        );
    }
}
