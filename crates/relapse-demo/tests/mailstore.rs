//! The OpenSRS Cluster B scenario's target: the backend keeps its mail in a maildir, real child
//! processes serve it, and a frozen file system under it hangs mail but not the shallow health
//! check or the login.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relapse_demo::{Demo, DemoAuth, DemoError, DemoOptions, Launcher};
use serde_json::Value;

const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(200);
/// The upstream timeout (and so the deep check's write bound) where a test wants the healthy
/// path only.
const HEALTHY_DISK_BOUND: Duration = Duration::from_secs(5);
/// How late past the upstream timeout an answer may come on a 2-core machine shared with others.
const TOLERANCE: Duration = Duration::from_millis(500);
/// Listings the frozen-store test sends while one is stuck.
const PILED_UP_LISTINGS: usize = 5;
/// Upper bound on anything a test waits for; only reached when a test fails.
const BOUND: Duration = Duration::from_secs(10);

const MESSAGE: &str = "From: Alice <alice@example.com>\r\nTo: demo@example.com\r\n\
                       Subject: Lunch & <b>Thursday</b>?\r\n\r\nSee you at noon.\r\n";

fn options(mailstore: Option<PathBuf>) -> DemoOptions {
    DemoOptions {
        upstream_timeout: UPSTREAM_TIMEOUT,
        mailstore,
        ..DemoOptions::new(Launcher {
            program: env!("CARGO_BIN_EXE_relapse-demo-child").into(),
            args: Vec::new(),
        })
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: String,
    elapsed: Duration,
}

/// One request on a fresh connection, bounded by `bound`; `None` if it did not finish in time.
async fn request_within(
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: &str,
    bound: Duration,
) -> Option<Reply> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let started = Instant::now();
    let call = async {
        let response = client.request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            body: String::from_utf8(body.to_vec()).unwrap(),
            elapsed: started.elapsed(),
        }
    };
    tokio::time::timeout(bound, call).await.ok()
}

async fn get(url: &str) -> Reply {
    request_within(Method::GET, url, None, "", BOUND)
        .await
        .unwrap_or_else(|| panic!("GET {url} did not finish within {BOUND:?}"))
}

async fn deliver(demo: &Demo, message: &str) -> Reply {
    let url = format!("{}/deliver", demo.backend_url());
    request_within(Method::POST, &url, None, message, BOUND)
        .await
        .unwrap_or_else(|| panic!("POST {url} did not finish within {BOUND:?}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The value of the sample `name` (with its labels, exactly) in a Prometheus text body.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().unwrap())
    })
}

#[tokio::test]
async fn delivery_lands_in_new_and_the_mailbox_lists_it_and_updates_the_seen_index() {
    let dir = tempfile::tempdir().unwrap();
    // A directory the demo has to create, below one that exists.
    let root = dir.path().join("mail");
    let demo = Demo::start(options(Some(root.clone()))).await.unwrap();
    assert_eq!(demo.mailstore(), Some(root.as_path()));
    for sub in ["tmp", "new", "cur"] {
        assert_eq!(mode(&root.join(sub)), 0o755, "{sub}/");
        assert!(names(&root.join(sub)).is_empty(), "{sub}/");
    }

    let delivered = deliver(&demo, MESSAGE).await;
    assert_eq!(delivered.status, StatusCode::CREATED, "{}", delivered.body);
    let file = delivered.body.trim_end().to_owned();
    let name = file.strip_prefix("new/").expect(&file).to_owned();
    assert_eq!(names(&root.join("new")), vec![name.clone()]);
    assert!(names(&root.join("tmp")).is_empty(), "tmp/ keeps nothing");
    assert_eq!(std::fs::read_to_string(root.join(&file)).unwrap(), MESSAGE);
    assert_eq!(mode(&root.join(&file)), 0o644);
    // The maildir specification's unique name: time.MmicrosPpidQseq.host
    let (secs, rest) = name.split_once('.').unwrap();
    assert!(secs.parse::<u64>().unwrap() > 1_600_000_000, "{name}");
    assert!(
        rest.starts_with('M') && rest.contains('P') && rest.contains('Q'),
        "{name}"
    );
    assert!(!name.contains('/') && !name.contains(':'), "{name}");

    let mailbox_url = format!("{}/mailbox", demo.backend_url());
    let listing = get(&mailbox_url).await;
    assert_eq!(listing.status, StatusCode::OK, "{}", listing.body);
    let json: Value = serde_json::from_str(&listing.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"messages": [{
            "id": 1,
            "from": "Alice <alice@example.com>",
            "subject": "Lunch & <b>Thursday</b>?",
            "file": file,
        }]})
    );
    let index_path = root.join("seen.index");
    assert_eq!(mode(&index_path), 0o644);
    let index = std::fs::read_to_string(&index_path).unwrap();
    let (header, entries) = index.split_once('\n').unwrap();
    assert!(header.starts_with("relapse-seen 1 V"), "{index}");
    assert!(header.ends_with(" N2 L1"), "{index}");
    assert_eq!(entries, format!("1 :{name}\n"));
    assert!(!root.join("seen.index.lock").exists());

    // Every listing rewrites the index.
    assert_eq!(get(&mailbox_url).await.status, StatusCode::OK);
    let index = std::fs::read_to_string(&index_path).unwrap();
    assert!(index.lines().next().unwrap().ends_with(" N2 L2"), "{index}");

    // An IMAP server marks it seen: moved to cur/ with flags, it keeps its uid; a second
    // message gets the next one.
    let seen = format!("cur/{name}:2,S");
    std::fs::rename(root.join(&file), root.join(&seen)).unwrap();
    let second = deliver(
        &demo,
        "From: bob@example.com\nSubject: Re: quarterly report\n\nok\n",
    )
    .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    let listing = get(&mailbox_url).await;
    let json: Value = serde_json::from_str(&listing.body).unwrap();
    let messages = json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{json}");
    assert_eq!(messages[0]["id"], 1);
    assert_eq!(messages[0]["file"], seen.as_str());
    assert_eq!(messages[1]["id"], 2);
    assert_eq!(messages[1]["from"], "bob@example.com");
    assert_eq!(messages[1]["file"], second.body.trim_end());
    let index = std::fs::read_to_string(&index_path).unwrap();
    assert!(index.lines().next().unwrap().ends_with(" N3 L3"), "{index}");

    // The frontend's inbox is the maildir now, escaped.
    let inbox = get(&format!("{}/", demo.frontend_url())).await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.body);
    assert!(
        inbox
            .body
            .contains("Lunch &amp; &lt;b&gt;Thursday&lt;/b&gt;?"),
        "{}",
        inbox.body
    );
    assert!(
        inbox.body.contains("Re: quarterly report"),
        "{}",
        inbox.body
    );
    assert!(!inbox.body.contains("Lunch on Thursday?"), "{}", inbox.body);

    let empty = deliver(&demo, "").await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    demo.shutdown().await;

    // A new backend on the same maildir keeps the uids and the listing count (the frontend's
    // inbox was the fourth listing, this is the fifth).
    let demo = Demo::start(options(Some(root.clone()))).await.unwrap();
    let listing = get(&format!("{}/mailbox", demo.backend_url())).await;
    let json: Value = serde_json::from_str(&listing.body).unwrap();
    assert_eq!(json["messages"][0]["id"], 1);
    assert_eq!(json["messages"][1]["id"], 2);
    let index = std::fs::read_to_string(&index_path).unwrap();
    assert!(index.lines().next().unwrap().ends_with(" N3 L5"), "{index}");
    demo.shutdown().await;
}

#[tokio::test]
async fn health_and_deep_health_are_200_and_metrics_count_the_mail_store() {
    let dir = tempfile::tempdir().unwrap();
    // A healthy mail store passes the deep check; how fast the host's own disk fsyncs is not
    // this test's question (in CI one took over 200 ms), so its bound here is generous.
    let demo = Demo::start(DemoOptions {
        upstream_timeout: HEALTHY_DISK_BOUND,
        ..options(Some(dir.path().to_owned()))
    })
    .await
    .unwrap();
    for url in [demo.frontend_url(), demo.backend_url()] {
        for path in ["/health", "/health/deep"] {
            let reply = get(&format!("{url}{path}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{url}{path}: {}", reply.body);
            assert_eq!(reply.body, "ok");
        }
    }
    let probe = dir.path().join("health.probe");
    assert_eq!(mode(&probe), 0o644);
    let written: u128 = std::fs::read_to_string(&probe)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(written > 1_600_000_000_000, "{written}");

    assert_eq!(deliver(&demo, MESSAGE).await.status, StatusCode::CREATED);
    assert_eq!(
        get(&format!("{}/mailbox", demo.backend_url())).await.status,
        StatusCode::OK
    );
    let metrics = get(&format!("{}/metrics", demo.backend_url())).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let body = &metrics.body;
    assert_eq!(
        sample(body, "relapse_demo_mail_delivered_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "relapse_demo_mailbox_listings_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "relapse_demo_deep_health_checks_total{result=\"ok\"}"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(
            body,
            "relapse_demo_deep_health_checks_total{result=\"failed\"}"
        ),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "relapse_demo_deep_health_check_blocked"),
        Some(0.0),
        "{body}"
    );
    demo.shutdown().await;
}

#[tokio::test]
async fn without_a_mailstore_the_mail_store_routes_are_absent() {
    let demo = Demo::start(options(None)).await.unwrap();
    assert_eq!(demo.mailstore(), None);
    for url in [
        format!("{}/health/deep", demo.frontend_url()),
        format!("{}/health/deep", demo.backend_url()),
        format!("{}/metrics", demo.backend_url()),
    ] {
        assert_eq!(get(&url).await.status, StatusCode::NOT_FOUND, "{url}");
    }
    assert_eq!(deliver(&demo, MESSAGE).await.status, StatusCode::NOT_FOUND);
    let inbox = get(&format!("{}/", demo.frontend_url())).await;
    assert!(inbox.body.contains("Lunch on Thursday?"), "{}", inbox.body);
    let mailbox = get(&format!("{}/mailbox", demo.backend_url())).await;
    assert!(!mailbox.body.contains("\"file\""), "{}", mailbox.body);
    demo.shutdown().await;
}

#[tokio::test]
async fn a_mailstore_path_that_is_not_utf8_is_refused_before_anything_starts() {
    use std::os::unix::ffi::OsStrExt;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/relapse-\xff"));
    let error = Demo::start(options(Some(path))).await.unwrap_err();
    assert!(matches!(error, DemoError::InvalidMailstore(_)), "{error:?}");

    // One the backend cannot create: it exits before its readiness line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let error = Demo::start(options(Some(file))).await.unwrap_err();
    assert!(matches!(error, DemoError::ExitedEarly { .. }), "{error:?}");
}

/// A scratch ext4 file system this test makes (image, loop device, mount) and can freeze. Drop
/// ALWAYS thaws, then unmounts, detaches and deletes, in that order, whatever went wrong.
struct ScratchFs {
    /// Holds the image and the mountpoint; deleted last.
    dir: Option<tempfile::TempDir>,
    image: PathBuf,
    mountpoint: PathBuf,
    device: Option<String>,
    mounted: bool,
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("{program}: {error} (fsfreeze, losetup and mount come with util-linux)")
        });
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

impl ScratchFs {
    fn create() -> ScratchFs {
        let found = Command::new("sh")
            .args(["-c", "command -v fsfreeze"])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "fsfreeze is missing: apt-get install -y util-linux"
        );
        assert!(
            run("id", &["-u"]) == "0",
            "this test makes a loop mount: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut fs = ScratchFs {
            image: dir.path().join("mail.img"),
            mountpoint: dir.path().join("mail"),
            dir: Some(dir),
            device: None,
            mounted: false,
        };
        let image = fs.image.to_str().unwrap().to_owned();
        let mountpoint = fs.mountpoint.to_str().unwrap().to_owned();
        std::fs::create_dir(&fs.mountpoint).unwrap();
        run("truncate", &["-s", "32M", &image]);
        run("mkfs.ext4", &["-q", "-F", &image]);
        let device = run("losetup", &["--find", "--show", &image]);
        assert!(device.starts_with("/dev/loop"), "{device}");
        fs.device = Some(device.clone());
        run("mount", &[&device, &mountpoint]);
        fs.mounted = true;
        fs
    }

    /// Freezes the file system, after checking it is ours: our loop device, mounted here.
    fn freeze(&self) {
        let mountpoint = self.mountpoint.to_str().unwrap();
        let source = run(
            "findmnt",
            &["-n", "-o", "SOURCE", "--mountpoint", mountpoint],
        );
        assert_eq!(Some(&source), self.device.as_ref(), "not our mount");
        run("fsfreeze", &["--freeze", mountpoint]);
    }

    fn thaw(&self) {
        run(
            "fsfreeze",
            &["--unfreeze", self.mountpoint.to_str().unwrap()],
        );
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        // Never panics: this runs while a failed test unwinds.
        let quiet = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .is_ok_and(|output| output.status.success())
        };
        let mountpoint = self.mountpoint.to_string_lossy().into_owned();
        if self.mounted {
            // Fails (harmlessly) when it is not frozen. Processes blocked on it finish now.
            quiet("fsfreeze", &["--unfreeze", &mountpoint]);
            // A demo child killed a moment ago may still hold it: then unmount lazily.
            if !quiet("umount", &[&mountpoint]) && !quiet("umount", &["--lazy", &mountpoint]) {
                eprintln!("could not unmount {mountpoint}");
            }
        }
        if let Some(device) = self.device.take() {
            if !quiet("losetup", &["-d", &device]) {
                eprintln!("could not detach {device}");
            }
        }
        drop(self.dir.take());
    }
}

#[tokio::test]
async fn a_frozen_mailstore_hangs_mail_but_not_health_or_login() {
    // Declared before the demo so that, should the test fail, the demo's children are killed
    // first and the file system thawed (and they reaped) after.
    let fs = ScratchFs::create();
    let demo = Demo::start(DemoOptions {
        auth: Some(DemoAuth::default()),
        ..options(Some(fs.mountpoint.clone()))
    })
    .await
    .unwrap();
    let front = demo.frontend_url().to_owned();
    let back = demo.backend_url().to_owned();
    let login_url = format!("{front}/login");
    let login = || {
        request_within(
            Method::POST,
            &login_url,
            Some("application/x-www-form-urlencoded"),
            "user=demo&password=demo-password",
            BOUND,
        )
    };

    assert_eq!(deliver(&demo, MESSAGE).await.status, StatusCode::CREATED);
    let inbox = get(&format!("{front}/")).await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.body);
    assert!(inbox.body.contains("alice@example.com"), "{}", inbox.body);
    assert_eq!(
        get(&format!("{front}/health/deep")).await.status,
        StatusCode::OK
    );

    fs.freeze();
    let frozen_at = Instant::now();

    // Mail hangs: the inbox times out upstream.
    let hung = get(&format!("{front}/")).await;
    assert_eq!(hung.status, StatusCode::GATEWAY_TIMEOUT, "{}", hung.body);
    assert!(hung.elapsed >= UPSTREAM_TIMEOUT, "{hung:?}");
    assert!(hung.elapsed < UPSTREAM_TIMEOUT + TOLERANCE, "{hung:?}");
    // And so does delivery, until the thaw.
    let delivering = tokio::spawn({
        let url = format!("{back}/deliver");
        async move { request_within(Method::POST, &url, None, MESSAGE, BOUND).await }
    });

    // The shallow health check and the login stay green, and answer at once.
    for url in [format!("{front}/health"), format!("{back}/health")] {
        let health = get(&url).await;
        assert_eq!(health.status, StatusCode::OK, "{url}: {}", health.body);
        assert!(health.elapsed < TOLERANCE, "{url}: {health:?}");
    }
    let welcome = login().await.expect("login hung");
    assert_eq!(welcome.status, StatusCode::OK, "{}", welcome.body);
    assert!(
        welcome.elapsed < UPSTREAM_TIMEOUT + TOLERANCE,
        "{welcome:?}"
    );

    // The deep check fails within the timeout...
    let deep = get(&format!("{front}/health/deep")).await;
    assert_eq!(
        deep.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        deep.body
    );
    assert!(deep.elapsed < UPSTREAM_TIMEOUT + TOLERANCE, "{deep:?}");
    // ...and while its write is stuck, the next ones fail at once without another thread.
    let again = get(&format!("{back}/health/deep")).await;
    assert_eq!(
        again.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        again.body
    );
    assert!(again.body.contains("still blocked"), "{}", again.body);
    assert!(again.elapsed < UPSTREAM_TIMEOUT, "{again:?}");
    let metrics = get(&format!("{back}/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        sample(&metrics.body, "relapse_demo_deep_health_check_blocked"),
        Some(1.0),
        "{}",
        metrics.body
    );
    assert!(
        !delivering.is_finished(),
        "a delivery finished on a frozen file system"
    );
    // Reads still work while frozen: the message is there for anyone who looks.
    assert_eq!(names(&fs.mountpoint.join("new")).len(), 1);

    // Listings pile up behind the one stuck in its index write (the hung inbox's)...
    let index_path = fs.mountpoint.join("seen.index");
    let index_writes = || {
        let index = std::fs::read_to_string(&index_path).unwrap();
        let header = index.lines().next().unwrap().to_owned();
        let (_, listings) = header.rsplit_once(" L").expect(&header);
        listings.parse::<u64>().expect(&header)
    };
    let writes_before_thaw = index_writes();
    let piled: Vec<_> = (0..PILED_UP_LISTINGS)
        .map(|_| {
            let url = format!("{back}/mailbox");
            tokio::spawn(async move { request_within(Method::GET, &url, None, "", BOUND).await })
        })
        .collect();
    let deadline = Instant::now() + BOUND;
    loop {
        let metrics = get(&format!("{back}/metrics")).await;
        let waiting = sample(&metrics.body, "relapse_demo_mailbox_listings_waiting");
        if waiting == Some(PILED_UP_LISTINGS as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the piled-up listings were not seen waiting: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let frozen_for = frozen_at.elapsed();
    fs.thaw();
    let thawed_at = Instant::now();

    // The delivery stuck in the freeze completes...
    let delivered = delivering
        .await
        .unwrap()
        .expect("the delivery did not finish after the thaw");
    assert_eq!(delivered.status, StatusCode::CREATED, "{}", delivered.body);
    // ...the piled-up listings all answer, and the index was written two or three times more,
    // not once per listing: the stuck write, then one that stands for every listing waiting
    // behind it (group commit), and one more if the delivery stuck in the same freeze landed
    // between two of them (a new message gets a new uid, which must be written)...
    for listing in piled {
        let listing = listing
            .await
            .unwrap()
            .expect("a piled-up listing did not finish after the thaw");
        assert_eq!(listing.status, StatusCode::OK, "{}", listing.body);
        assert!(
            listing.body.contains("alice@example.com"),
            "{}",
            listing.body
        );
    }
    let written = index_writes() - writes_before_thaw;
    assert!(
        (2..=3).contains(&written),
        "{written} index writes for {} listings",
        PILED_UP_LISTINGS + 1
    );
    // ...the deep check's stuck write returns (the gauge is the only cross-process sign of it)...
    let deadline = Instant::now() + BOUND;
    loop {
        let metrics = get(&format!("{back}/metrics")).await;
        if sample(&metrics.body, "relapse_demo_deep_health_check_blocked") == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deep check stayed blocked after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unblocked_after = thawed_at.elapsed();
    // ...and everything is green again.
    let inbox = get(&format!("{front}/")).await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.body);
    assert_eq!(
        inbox.body.matches("alice@example.com").count(),
        2,
        "{}",
        inbox.body
    );
    for url in [format!("{front}/health"), format!("{front}/health/deep")] {
        let health = get(&url).await;
        assert_eq!(health.status, StatusCode::OK, "{url}: {}", health.body);
    }
    assert_eq!(login().await.expect("login hung").status, StatusCode::OK);
    let recovered_after = thawed_at.elapsed();
    eprintln!(
        "frozen for {frozen_for:?}: inbox 504 after {:?}, deep 503 after {:?}, \
         repeated deep 503 after {:?}, health 200, login 200 after {:?}; after the thaw the \
         deep check unblocked in {unblocked_after:?}, all 200 within {recovered_after:?}",
        hung.elapsed, deep.elapsed, again.elapsed, welcome.elapsed
    );

    demo.shutdown().await;
    drop(fs);
}
