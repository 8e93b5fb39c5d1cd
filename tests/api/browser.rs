//! A real headless Chromium signs in and out through the login page.
//! Needs `chromedriver` and `chromium` (Debian packages chromium-driver,
//! chromium). Locally the test skips loudly without them; with `CI=true` it
//! fails.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dzdesk_auth::domain::Role;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::helpers::{spawn_app, PASSWORD};

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find(cmds: &[&str]) -> Option<String> {
    cmds.iter()
        .find(|c| std::path::Path::new(c).exists())
        .map(|c| (*c).to_owned())
}

/// Starts chromedriver and a headless Chromium session, or returns None
/// (after saying so loudly) when they are not installed outside CI.
pub async fn start_browser() -> Option<Browser> {
    let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let (Some(driver), Some(chromium)) = (driver, chromium) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but chromium / chromedriver are not installed");
        }
        eprintln!("\n!!!!!!!! SKIPPED browser test: chromium and chromedriver are not installed (apt-get install chromium chromium-driver) !!!!!!!!\n");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let caps: serde_json::Map<String, serde_json::Value> = caps.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    let mut last_err = None;
    for _ in 0..50 {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => {
                return Some(Browser {
                    client,
                    driver: child,
                    _profile: profile,
                })
            }
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("could not start a Chromium session: {last_err:?}");
}

pub async fn type_into(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Picks `value` in the `<select>` at `css`.
pub async fn choose(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// The key a page shows once (`#new-api-key`), waiting for it.
pub async fn shown_key(c: &Client) -> String {
    c.wait()
        .for_element(Locator::Css("#new-api-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .trim()
        .to_owned()
}

pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn browser_signs_in_and_out_through_the_login_page() {
    let app = spawn_app().await;
    app.create_user("ann@example.com", Role::Agent).await;
    let Some(browser) = start_browser().await else {
        return;
    };
    let c = &browser.client;

    // A wrong password first: the page says so and stays on /login.
    c.goto(&app.url("/login")).await.unwrap();
    type_into(c, "input[name=email]", "ann@example.com").await;
    type_into(c, "input[name=password]", "not my password!").await;
    click(c, "button[type=submit]").await;
    let error = c
        .wait()
        .for_element(Locator::Css("#login-error"))
        .await
        .unwrap();
    assert_eq!(error.text().await.unwrap(), "Wrong email or password.");

    // The right one: the browser follows the redirect to the signed-in page.
    type_into(c, "input[name=password]", PASSWORD).await;
    click(c, "button[type=submit]").await;
    let who = c
        .wait()
        .for_element(Locator::Css("#signed-in-as"))
        .await
        .unwrap();
    assert!(who.text().await.unwrap().contains("ann@example.com"));

    // The stylesheet loaded under the CSP.
    let color = c
        .execute(
            "return getComputedStyle(document.querySelector('#sign-out-everywhere')).backgroundColor",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(color, "rgb(36, 81, 214)");

    // Sign out: back to the login page, and / no longer shows the account.
    click(c, "form[action='/logout'] button").await;
    c.wait()
        .for_element(Locator::Css("input[name=password]"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    c.goto(&app.url("/")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("input[name=password]"))
        .await
        .unwrap();

    browser.client.clone().close().await.unwrap();
}
