//! Pipeline files as an attacker who can push one writes them: alias bombs, files too large,
//! bytes that are not UTF-8, a byte-order mark, megabyte lines, and a bounded fuzz of the whole
//! checker. Whatever comes in, the checker answers with a positioned error or a pipeline, in
//! bounded time and memory, and never panics.

use super::*;

const SMALL: &str =
    "stages:\n  - name: build\n    jobs:\n      - name: compile\n        run: make\n";

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_key() {
    let with_bom = format!("\u{feff}{SMALL}");
    let checked = parse_pipeline("gantry.yml", &with_bom).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked.pipeline.stages[0].name, "build");
    let bytes = with_bom.into_bytes();
    assert!(parse_pipeline_bytes("gantry.yml", &bytes).is_ok());
}

#[test]
fn text_that_is_not_utf8_is_an_error_at_its_line_and_column() {
    let mut bytes = SMALL.as_bytes().to_vec();
    // `run: ma\xffke` on line 5.
    let at = SMALL.find("make").unwrap() + 2;
    bytes.insert(at, 0xff);
    let err = parse_pipeline_bytes("gantry.yml", &bytes).unwrap_err();
    let d = &err.items[0];
    assert_eq!((d.pos.line, d.pos.col), (5, 16), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("gantry.yml:5:16: error: the file is not UTF-8 text"),
        "{text}"
    );
    assert!(text.contains("0xff"), "{text}");
}

#[test]
fn a_file_over_the_limit_is_refused_without_reading_it_as_yaml() {
    let big = format!("{SMALL}# {}\n", "x".repeat(MAX_PIPELINE_BYTES));
    let err = parse_pipeline("gantry.yml", &big).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("gantry.yml:1:1: error: the pipeline file is"),
        "{text}"
    );
    assert!(
        text.contains(&format!("at most {MAX_PIPELINE_BYTES} bytes")),
        "{text}"
    );
    assert!(
        text.len() < 2_000,
        "the error quotes the file: {} bytes",
        text.len()
    );
}

#[test]
fn an_error_on_a_huge_line_quotes_only_the_part_around_the_column() {
    let long = "y".repeat(500_000);
    let doc = format!("stages:\n  - name: build\n    jobz: {long}\n");
    let err = parse_pipeline("gantry.yml", &doc).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("gantry.yml:3:5: error:"),
        "{}",
        &text[..text.len().min(600)]
    );
    assert!(text.len() < 4_000, "{} bytes of error", text.len());
    // An error whose column is far into the line: the quote is cut around it.
    let doc =
        format!("stages:\n  - name: build\n    jobs: [{long}, {{name: 7, run: 1, oops: 2}}]\n");
    let err = parse_pipeline("gantry.yml", &doc).unwrap_err();
    let text = err.to_string();
    assert!(text.len() < 8_000, "{} bytes of error", text.len());
    assert!(text.contains('…'), "{text}");
    assert!(text.contains("oops"), "{text}");
}

#[test]
fn an_alias_bomb_is_a_positioned_error_not_gigabytes() {
    let mut doc = String::from("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..12 {
        doc.push_str(&format!(
            "x{i}: &x{i} [{}]\n",
            vec![format!("*x{}", i - 1); 10].join(", ")
        ));
    }
    doc.push_str("stages: [*x11]\n");
    assert!(doc.len() < 1_000, "{} bytes", doc.len());
    let err = parse_pipeline("gantry.yml", &doc).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("expands to more than"), "{text}");
    assert!(text.starts_with("gantry.yml:"), "{text}");
}

/// A small xorshift: the fuzz below is the same on every run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEED_FILE: &str = r#"env: { A: 1 }
stages:
  - name: build
    jobs:
      - name: compile
        steps:
          - run: make
            timeout: 1m
        artifacts: [{ name: app, path: dist/ }]
        retries: 2
  - name: ship
    deploy: { environment: prod, artifact: app }
environments:
  prod:
    target: { process: { command: ./app --port $PORT } }
    router: { listen: "127.0.0.1:8102" }
    health: { http: /healthz, timeout: 5s }
    strategy:
      canary:
        steps: [{ weight: 10, pause: 1m }, { approval: true }]
        analysis: { max_error_rate: 1%, min_requests: 10 }
base: &b { name: x, run: y }
more: [*b, *b]
"#;

/// Pieces that make YAML and the checker work: indentation, flow syntax, anchors, merges,
/// quotes, block scalars, odd characters.
const PIECES: &[&str] = &[
    "\n",
    "  ",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: *b",
    "'",
    "\"",
    "|\n",
    ">-\n",
    "#",
    "\t",
    "\u{feff}",
    "\u{0}",
    "é",
    "---\n",
    "...\n",
    "!!str ",
    "? ",
    "%YAML 1.2\n",
    "name",
    "jobs",
    "stages",
    "run",
    "deploy",
    "9999999999999999999999",
    "-1",
    "1e309",
    "~",
];

#[test]
fn the_checker_never_panics_and_always_says_where() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..1_500 {
        let mut doc: Vec<char> = SEED_FILE.chars().collect();
        for _ in 0..=rng.below(6) {
            let at = rng.below(doc.len() + 1);
            match rng.below(3) {
                0 => {
                    let piece = PIECES[rng.below(PIECES.len())];
                    for (i, c) in piece.chars().enumerate() {
                        doc.insert((at + i).min(doc.len()), c);
                    }
                }
                1 => {
                    let end = (at + rng.below(12)).min(doc.len());
                    doc.drain(at.min(end)..end);
                }
                _ => {
                    // Repeat a slice: nested structure and long lines.
                    let end = (at + rng.below(40)).min(doc.len());
                    let slice: Vec<char> = doc[at.min(end)..end].to_vec();
                    for _ in 0..rng.below(4) {
                        for (i, c) in slice.iter().enumerate() {
                            doc.insert((end + i).min(doc.len()), *c);
                        }
                    }
                }
            }
        }
        let text: String = doc.into_iter().collect();
        let outcome = std::panic::catch_unwind(|| parse_pipeline("gantry.yml", &text));
        let Ok(result) = outcome else {
            panic!("round {round}: the checker panicked on:\n{text}");
        };
        let lines = text.lines().count().max(1) + 1;
        let diags = match &result {
            Ok(c) => &c.warnings,
            Err(d) => {
                assert!(
                    d.has_errors(),
                    "round {round}: an Err without an error:\n{text}"
                );
                d
            }
        };
        for d in &diags.items {
            assert!(
                d.pos.line >= 1 && d.pos.line <= lines && d.pos.col >= 1,
                "round {round}: {d:?} is not a position in:\n{text}"
            );
        }
        // Rendering never panics either (cut lines, multi-byte characters, tabs).
        let _ = diags.to_string();
    }
}
