//! `relapse report` end to end, on the JSON of a real run (`scenarios/flg-healthcheck-hang.toml
//! --repeat 3`): the page is written, holds what the JSON has, and renders in a real headless
//! Chromium with its first timeline drawn where the layout puts it.

mod support;

use std::io::BufReader;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::Value;
use support::{relapse, repo, show};

const REPORT: &str = "tests/data/report/flg-healthcheck-hang-x3.json";

fn classes(page: &str) -> Vec<(String, Option<String>)> {
    let mut reader = Reader::from_str(page);
    let mut out = Vec::new();
    loop {
        match reader.read_event().expect("the page is well-formed XML") {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let get = |key: &str| {
                    e.attributes()
                        .map(|a| a.expect("well-formed attribute"))
                        .find(|a| a.key.as_ref() == key.as_bytes())
                        .map(|a| String::from_utf8(a.value.to_vec()).unwrap())
                };
                if let Some(class) = get("class") {
                    out.push((class, get("data-event")));
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_report_of_real_runs_has_a_span_per_fault_and_a_mark_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let markdown = dir.path().join("summary.md");
    let output = relapse()
        .arg("report")
        .arg(repo(REPORT))
        .arg("--html")
        .arg(&html)
        .arg("--markdown")
        .arg(&markdown)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let page = std::fs::read_to_string(&html).unwrap();
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(repo(REPORT)).unwrap()).unwrap();
    let episodes: Vec<&Value> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["episodes"].as_array().unwrap())
        .collect();
    let present = |key: &str| episodes.iter().filter(|e| !e[key].is_null()).count();
    let faults: usize = episodes
        .iter()
        .map(|e| e["faults"].as_array().unwrap().len())
        .sum();

    let elements = classes(&page);
    let count = |class: &str, event: Option<&str>| {
        elements
            .iter()
            .filter(|(c, e)| c == class && (event.is_none() || e.as_deref() == event))
            .count()
    };
    assert_eq!(count("fault-span", None), faults);
    assert_eq!(count("mark", Some("impact")), present("time_to_impact_ms"));
    assert_eq!(
        count("mark", Some("detection")),
        present("time_to_detect_ms")
    );
    assert_eq!(
        count("mark", Some("mitigation")),
        present("mitigation_window")
    );
    assert_eq!(count("mark", Some("recovery")), present("recovery_window"));
    assert_eq!(
        count("mark", None),
        [
            "time_to_impact_ms",
            "time_to_detect_ms",
            "mitigation_window",
            "recovery_window"
        ]
        .map(present)
        .iter()
        .sum::<usize>()
    );
    assert!(!page.contains("<script"));
    assert!(!page.contains("http://") && !page.contains("https://"));

    // The same summary table `relapse run --markdown` writes: one row per run and episode.
    let table = std::fs::read_to_string(&markdown).unwrap();
    assert_eq!(
        table.matches("| flg-healthcheck-hang #").count(),
        episodes.len()
    );
}

#[test]
fn a_file_that_is_not_a_relapse_report_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"runs": []}"#).unwrap();
    let html = dir.path().join("report.html");
    for file in [other, repo("Cargo.toml")] {
        let output = relapse()
            .arg("report")
            .arg(repo(REPORT))
            .arg(&file)
            .arg("--html")
            .arg(&html)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", show(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&file.display().to_string()),
            "{}",
            show(&output)
        );
        assert!(
            stderr.contains("not a relapse JSON report") || stderr.contains("not JSON"),
            "{}",
            show(&output)
        );
        assert!(!html.exists(), "nothing is written from a bad input");
    }
}

/// Runs Chromium to a screenshot, waiting for it at most `bound`; on overrun its process group
/// (it, by its pid, and the helpers it started) is killed.
fn screenshot(page: &std::path::Path, png: &std::path::Path, bound: Duration) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args(["--headless", "--disable-gpu", "--no-sandbox"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,1600")
        .arg("--hide-scrollbars")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromium is installed (.ci/run installs it)");
    let pid = child.id() as i32;
    let (done, waited) = mpsc::channel();
    let waiter = std::thread::spawn(move || done.send(child.wait()).ok());
    match waited.recv_timeout(bound) {
        Ok(status) => assert!(status.unwrap().success(), "chromium failed"),
        Err(_) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            waiter.join().unwrap();
            panic!("chromium did not finish within {bound:?}");
        }
    }
    waiter.join().unwrap();
}

#[test]
fn the_first_timeline_is_drawn_where_the_layout_puts_it() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let output = relapse()
        .arg("report")
        .arg(repo(REPORT))
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let png = dir.path().join("report.png");
    screenshot(&html, &png, Duration::from_secs(90));

    let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    assert_eq!((frame.width, frame.height), (1200, 1600));
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "{:?}", frame.color_type);
    let non_white = |x0: u32, y0: u32, w: u32, h: u32| {
        let mut n = 0;
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let at = y as usize * frame.line_size + x as usize * channels;
                if buffer[at..at + 3].iter().any(|v| *v < 235) {
                    n += 1;
                }
            }
        }
        n
    };
    let (x, y, w, h) = relapse::render::html::FIRST_TIMELINE;
    let drawn = non_white(x, y, w, h);
    // Axes, bands, samples, spans, windows and marks: well over 2% of the area is ink.
    assert!(
        drawn > (w * h) as usize / 50,
        "{drawn} non-white pixels in the timeline's {w}x{h}"
    );
    // And the strip just right of it, inside the window, is blank: the timeline is where said.
    assert_eq!(non_white(x + w + 20, y, 1200 - (x + w + 20) - 20, h), 0);
}
