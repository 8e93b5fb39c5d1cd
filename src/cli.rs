//! The command line: `serve` (default), `migrate`, `user
//! create|list|set-plan|disable|enable`, `client
//! create|list|rotate-secret|disable|enable|set-plan`, `keys rotate`, `secrets
//! rotate`, `api-key create|list|rotate`.
//!
//! Output shapes are a contract scripts depend on: `user create` prints exactly
//! one JSON object `{"id": "user_..."}` on stdout, `api-key create`
//! `{"id": "key_...", "key": "dzd_..."}`. Exit codes: 0 success,
//! 1 failure or conflict (duplicate email), 2 invalid input or configuration.

use std::io::{IsTerminal, Read};

use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::accounts::{self, AccountError};
use crate::api::keys::{self as api_keys, MintedBy, NewKey};
use crate::config::{ConfigError, Settings};
use crate::credentials::jwt;
use crate::db::models::{Client, User};
use crate::db::{run_migrations, sealed, AnyConnection, Database};
use crate::domain::{Email, GrantType, NewPassword, Plan, Role};
use crate::error::ApiError;
use crate::oauth::clients::{self, ClientRequest, NewClient};
use crate::secrets::KEY_VAR;
use crate::startup::{Application, BuildError, StopSignals};
use crate::telemetry::init_logging;

#[derive(Parser, Debug)]
#[command(name = "dzdesk-auth", version, about = "DZDESK authorization server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service (the default without a subcommand). Migrates first.
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage access-token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users' API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Manage the encryption of secrets at rest (DZDESK_SECRETS_KEY).
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Re-encrypt every stored private key and server secret under
    /// DZDESK_SECRETS_KEY, reading those written under
    /// DZDESK_SECRETS_KEY_OLD, in one transaction; prints
    /// {"reencrypted": N}. Run it once every instance has both keys; then
    /// DZDESK_SECRETS_KEY_OLD can go.
    Rotate,
}

#[derive(Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Create an API key for a user; prints {"id": "key_...", "key": "dzd_..."}.
    /// The key is shown this once.
    Create {
        /// The owner's email.
        #[arg(long)]
        email: String,
        /// What the key is for (1 to 100 characters).
        #[arg(long)]
        name: String,
        /// Scopes, space-separated or repeated (within the user's role).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Days until the key expires (default: never).
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// List a user's API keys that are not revoked, newest first (never
    /// the keys themselves: their prefixes).
    List {
        /// The owner's email.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        format: ListFormat,
    },
    /// Rotate an API key: a new key with the same name, scopes and expiry;
    /// prints {"id": "key_...", "key": "dzd_..."} (shown this once). The old
    /// key keeps working for the grace period, then is refused on every
    /// running instance (with 0: within about a second).
    Rotate {
        /// The id of the key to replace (key_...).
        #[arg(long)]
        id: String,
        /// Hours the old key keeps working: 0 (at once) to 168 (default 24).
        #[arg(long, default_value_t = api_keys::Grace::DEFAULT_HOURS)]
        grace_hours: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register a client; prints {"client_id": "...", "client_secret": "..."}
    /// (no secret for --public). The secret is shown this once.
    Create(ClientCreateArgs),
    /// List every client, oldest first.
    List(ListFormat),
    /// Give a confidential client a new secret; prints {"client_id": ...,
    /// "client_secret": "dzs_...", "old_secret_works_until": ...}. The new
    /// secret is shown this once. The old one keeps working for the grace
    /// (default 0: it stops at once; a running instance may take up to
    /// DZDESK_CLIENT_CACHE_SECS to notice).
    RotateSecret {
        /// The client's id (client_...).
        #[arg(long)]
        id: String,
        /// Hours the old secret keeps working: 0 (at once, the default) to
        /// 168.
        #[arg(long, default_value_t = 0)]
        grace_hours: i64,
    },
    /// Disable a client: it cannot authenticate, and every token issued to
    /// it fails introspection at once. Prints {"client_id": ..., "disabled": true}.
    Disable {
        /// The client's id (client_...).
        #[arg(long)]
        id: String,
    },
    /// Enable a disabled client again.
    Enable {
        /// The client's id (client_...).
        #[arg(long)]
        id: String,
    },
    /// Set the plan of a client's own account (its client_credentials
    /// tokens); prints {"client_id", "plan", "rate_limit"}.
    SetPlan {
        /// The client's id (client_...).
        #[arg(long)]
        id: String,
        #[command(flatten)]
        plan: RequiredPlanArgs,
    },
}

#[derive(Args, Debug)]
pub struct ClientCreateArgs {
    /// Display name, shown on the consent page.
    #[arg(long)]
    name: String,
    /// Redirect URI (repeatable): https, or http on loopback only.
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// Space-separated scopes the client may ask for.
    #[arg(long)]
    scope: String,
    /// A public client (no secret; PKCE required).
    #[arg(long)]
    public: bool,
    /// Grant type (repeatable): authorization_code, refresh_token,
    /// client_credentials. Default: authorization_code + refresh_token.
    #[arg(long = "grant-type")]
    grant_types: Vec<String>,
    /// Require PKCE even though the client is confidential.
    #[arg(long)]
    require_pkce: bool,
    /// May introspect any token (internal DZDESK services; a confidential
    /// client: a public one cannot authenticate to introspect); other clients
    /// see only their own tokens.
    #[arg(long, conflicts_with = "public")]
    introspect: bool,
    /// A browser origin (repeatable; https://host[:port], or http on
    /// loopback) allowed to call the token and revocation endpoints and /v1
    /// with this client's tokens (CORS). Default: the origins of the
    /// redirect URIs.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Where the browser may go after a logout the client starts
    /// (repeatable; OpenID Connect RP-Initiated Logout; the rules of
    /// --redirect-uri, matched exactly).
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// Refuse authorization requests that were not pushed first (POST
    /// /oauth/par, RFC 9126 `require_pushed_authorization_requests`).
    #[arg(long)]
    require_par: bool,
    #[command(flatten)]
    plan: PlanArgs,
}

impl From<ClientCreateArgs> for ClientRequest {
    fn from(a: ClientCreateArgs) -> Self {
        ClientRequest {
            name: a.name,
            redirect_uris: a.redirect_uris,
            scope: a.scope,
            public: a.public,
            grant_types: a.grant_types,
            require_pkce: a.require_pkce,
            introspect: a.introspect,
            cors_origins: a.cors_origins,
            post_logout_redirect_uris: a.post_logout_redirect_uris,
            require_par: a.require_par,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a new ES256 key that signs from now on; prints {"kid": "..."}.
    /// Older public keys stay published until every token they signed has
    /// expired. Running instances switch within about a second.
    Rotate {
        /// The previous keys are believed stolen: revoke them. They leave
        /// the JWKS at once and every token they signed is refused, on
        /// every instance, for good.
        #[arg(long)]
        revoke_previous: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; prints {"id": "user_..."}.
    Create {
        /// Email address (unique, case-insensitive).
        #[arg(long)]
        email: String,
        /// What the user may grant: admin (every scope) or agent.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password (at least 12 characters) from standard input;
        /// on a terminal, prompt for it twice without echo. Passwords are
        /// never taken as arguments: they would show in `ps`.
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// List every user, by id.
    List(ListFormat),
    /// Set a user's plan (their API keys' and OAuth tokens' rate limit);
    /// prints {"id", "plan", "rate_limit"}. Running instances apply it at
    /// once.
    SetPlan {
        /// The user's email.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        plan: RequiredPlanArgs,
    },
    /// Disable a user: they cannot sign in and every session ends at once.
    Disable {
        /// The user's email.
        #[arg(long)]
        email: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user's email.
        #[arg(long)]
        email: String,
    },
}

/// How the list commands print: a table, or JSON with --json.
#[derive(Args, Debug)]
pub struct ListFormat {
    /// Print one JSON array instead of a table (for scripts).
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PlanArg {
    Standard,
    Professional,
    Enterprise,
}

impl PlanArg {
    fn name(self) -> &'static str {
        match self {
            PlanArg::Standard => "standard",
            PlanArg::Professional => "professional",
            PlanArg::Enterprise => "enterprise",
        }
    }
}

/// `--plan` and `--rate-limit` on `create` (default: standard).
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Rate-limit plan: standard (60 requests/minute, the default),
    /// professional (300) or enterprise (--rate-limit).
    #[arg(long, value_enum)]
    plan: Option<PlanArg>,
    /// Requests per minute (enterprise only, and required for it).
    #[arg(long)]
    rate_limit: Option<i64>,
}

impl PlanArgs {
    fn plan(&self) -> Result<Plan, CliError> {
        match (self.plan, self.rate_limit) {
            (None, None) => Ok(Plan::Standard),
            (None, Some(_)) => Err(CliError::Invalid(
                "invalid --rate-limit: it needs --plan enterprise".into(),
            )),
            (Some(p), n) => Plan::parse(p.name(), n)
                .map_err(|m| CliError::Invalid(format!("invalid --plan/--rate-limit: {m}"))),
        }
    }
}

/// `--plan` (required) and `--rate-limit` on `set-plan`.
#[derive(Args, Debug)]
pub struct RequiredPlanArgs {
    /// standard (60 requests/minute), professional (300) or enterprise
    /// (--rate-limit).
    #[arg(long, value_enum)]
    plan: PlanArg,
    /// Requests per minute (enterprise only, and required for it).
    #[arg(long)]
    rate_limit: Option<i64>,
}

impl RequiredPlanArgs {
    fn plan(&self) -> Result<Plan, CliError> {
        PlanArgs {
            plan: Some(self.plan),
            rate_limit: self.rate_limit,
        }
        .plan()
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Admin,
    Agent,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Agent => Role::Agent,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Invalid input: exit 2.
    #[error("{0}")]
    Invalid(String),
    /// Unusable configuration: exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A conflict with existing data, nothing changed: exit 1.
    #[error("{0}")]
    Conflict(String),
    /// Anything else: exit 1.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Invalid(_) | CliError::Config(_) => 2,
            CliError::Conflict(_) | CliError::Failed(_) => 1,
        }
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            init_logging("info");
            serve()
        }
        Command::Migrate => {
            init_logging("warn");
            let (_, applied) = migrated_connection(&Settings::from_env()?)?;
            if applied.is_empty() {
                eprintln!("already up to date");
            }
            for version in applied {
                eprintln!("applied {version}");
            }
            Ok(())
        }
        Command::User(cmd) => {
            init_logging("warn");
            user(cmd)
        }
        Command::Client(cmd) => {
            init_logging("warn");
            client(cmd)
        }
        Command::ApiKey(cmd) => {
            init_logging("warn");
            api_key(cmd)
        }
        Command::Keys(KeysCommand::Rotate { revoke_previous }) => {
            init_logging("warn");
            let settings = Settings::from_env()?;
            let sealer = settings.sealer()?;
            let mut conn = open_connection_with(&settings)?;
            // A wrong key would seal the new key where no instance can read it.
            sealed::prepare(&mut conn, sealer).map_err(|e| failure(e.into()))?;
            let kid = jwt::rotate(&mut conn, sealer, Utc::now().naive_utc(), revoke_previous)
                .map_err(failure)?;
            if revoke_previous {
                log::warn!(
                    "signing keys other than {kid} revoked: every token they signed is refused"
                );
            }
            println!("{}", serde_json::json!({ "kid": kid }));
            Ok(())
        }
        Command::Secrets(SecretsCommand::Rotate) => {
            init_logging("warn");
            let settings = Settings::from_env()?;
            let sealer = settings.sealer()?;
            if !sealer.is_on() {
                return Err(ConfigError::new(
                    KEY_VAR,
                    "is not set: `secrets rotate` encrypts every stored secret under it",
                )
                .into());
            }
            let mut conn = open_connection_with(&settings)?;
            let count = sealed::reseal_all(&mut conn, sealer).map_err(|e| failure(e.into()))?;
            println!("{}", serde_json::json!({ "reencrypted": count }));
            Ok(())
        }
    }
}

/// A failure that may be a configuration error: a stored secret that the
/// keys set cannot open (its message names `DZDESK_SECRETS_KEY`), or a
/// setting refused on the way (exit 2).
fn failure(e: anyhow::Error) -> CliError {
    if let Some(s) = sealed::secrets_error(&e) {
        return CliError::Invalid(s.to_string());
    }
    match e.downcast::<ConfigError>() {
        Ok(config) => config.into(),
        Err(e) => CliError::Failed(e),
    }
}

fn connection_error(e: impl std::fmt::Display) -> CliError {
    ConfigError::new(
        "DATABASE_URL",
        format!("cannot connect to the database: {e}"),
    )
    .into()
}

/// A SQLite file that cannot be opened for writing stops start-up with one
/// line naming the path and the OS error: SQLite itself says only "unable to
/// open database file", and the pool would retry it for seconds, four
/// errors in the log and no path.
fn check_sqlite_file(settings: &Settings) -> Result<(), CliError> {
    let Some(path) = settings.database_url.sqlite_path() else {
        return Ok(());
    };
    if path == ":memory:" || path.starts_with("file:") {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|e| {
            ConfigError::new(
                "DATABASE_URL",
                format!("cannot open the SQLite database {path:?} for writing: {e}"),
            )
            .into()
        })
}

/// One migrated connection for a command. Configuration and connection
/// errors name the variable (exit 2).
fn open_connection() -> Result<AnyConnection, CliError> {
    open_connection_with(&Settings::from_env()?)
}

fn open_connection_with(settings: &Settings) -> Result<AnyConnection, CliError> {
    migrated_connection(settings).map(|(conn, _)| conn)
}

/// A connection, migrated, and the names of the migrations that applied.
fn migrated_connection(settings: &Settings) -> Result<(AnyConnection, Vec<String>), CliError> {
    check_sqlite_file(settings)?;
    let mut conn = Database::establish(&settings.database_url).map_err(connection_error)?;
    let applied = run_migrations(&mut conn)?;
    Ok((conn, applied))
}

/// The pool for the service, migrated.
fn connect(settings: &Settings) -> Result<Database, CliError> {
    check_sqlite_file(settings)?;
    let db = Database::connect_with_timeout(
        &settings.database_url,
        settings.db_pool_size,
        settings.db_timeout,
    )
    .map_err(connection_error)?;
    db.migrate()?;
    Ok(db)
}

fn serve() -> Result<(), CliError> {
    let settings = Settings::from_env()?;
    // Production without DZDESK_SECRETS_KEY, or a bad certificate or key,
    // stops start-up before the database is touched.
    settings.sealer()?;
    if let Some(files) = &settings.tls {
        crate::tls::load(files)?;
    }
    actix_web::rt::System::new().block_on(async move {
        let signals = StopSignals::watch()
            .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot watch SIGTERM: {e}")))?;
        // Blocking, on the runtime's thread: nothing else runs on it yet.
        let db = connect(&settings)?;
        let mut app = Application::build(settings, db)
            .await
            .map_err(|e| match e {
                BuildError::Listen { var, .. } => {
                    CliError::Config(ConfigError::new(var, e.to_string()))
                }
                BuildError::Tls(e) => CliError::Config(e),
                BuildError::Other(e) => failure(e),
            })?;
        app.stop_on_signals(signals);
        let scheme = if app.is_tls() { "https" } else { "http" };
        log::info!("listening on {scheme}://{}", app.local_addr());
        log::info!(
            "issuer {} (in metadata and tokens; set DZDESK_ISSUER to the public URL)",
            app.issuer()
        );
        if let Some(plain) = app.http_addr() {
            log::info!("listening on http://{plain} (probes, and redirects to https)");
        }
        if let Some(metrics) = app.metrics_addr() {
            log::info!("metrics on http://{metrics}/metrics");
        }
        app.run_until_stopped()
            .await
            .map_err(|e| CliError::Failed(e.into()))
    })
}

fn user(cmd: UserCommand) -> Result<(), CliError> {
    let now = Utc::now().naive_utc();
    match cmd {
        UserCommand::Create {
            email, role, plan, ..
        } => {
            // Validate everything before touching the database.
            let email = Email::parse(&email)
                .map_err(|m| CliError::Invalid(format!("invalid --email: {m}")))?;
            let plan = plan.plan()?;
            let password = NewPassword::parse(read_new_password()?)
                .map_err(|m| CliError::Invalid(format!("invalid password: {m}")))?;
            let mut conn = open_connection()?;
            let user = accounts::create_user(&mut conn, &email, role.into(), plan, &password, now)
                .map_err(account_error)?;
            println!("{}", serde_json::json!({ "id": user.id }));
            Ok(())
        }
        UserCommand::SetPlan { email, plan } => {
            let email = Email::parse(&email)
                .map_err(|m| CliError::Invalid(format!("invalid --email: {m}")))?;
            let plan = plan.plan()?;
            let mut conn = open_connection()?;
            let user = User::find_by_email(&mut conn, &email)
                .map_err(|e| CliError::Failed(e.into()))?
                .ok_or_else(|| CliError::Conflict("no user with this email".into()))?;
            User::set_plan(&mut conn, &user.id, plan, now)
                .map_err(|e| CliError::Failed(e.into()))?;
            println!(
                "{}",
                serde_json::json!({ "id": user.id, "plan": plan.name(), "rate_limit": plan.limit() })
            );
            Ok(())
        }
        UserCommand::List(format) => list_users(&format),
        UserCommand::Disable { email } => set_disabled(&email, true, now),
        UserCommand::Enable { email } => set_disabled(&email, false, now),
    }
}

fn api_key(cmd: ApiKeyCommand) -> Result<(), CliError> {
    let (email, name, scopes, expires_in_days) = match cmd {
        ApiKeyCommand::Create {
            email,
            name,
            scopes,
            expires_in_days,
        } => (email, name, scopes, expires_in_days),
        ApiKeyCommand::Rotate { id, grace_hours } => return rotate_api_key(&id, grace_hours),
        ApiKeyCommand::List { email, format } => return list_api_keys(&email, &format),
    };
    // Validate everything before touching the database, with the API's rules.
    let email =
        Email::parse(&email).map_err(|m| CliError::Invalid(format!("invalid --email: {m}")))?;
    let names: Vec<&str> = scopes
        .iter()
        .flat_map(|s| s.split([' ', ',']))
        .filter(|s| !s.is_empty())
        .collect();
    let body = serde_json::json!({
        "name": name,
        "scopes": names,
        "expires_in_days": expires_in_days,
    });
    let new =
        NewKey::from_json(&body).map_err(|e| CliError::Invalid(format!("invalid option: {e}")))?;
    let mut conn = open_connection()?;
    let user = User::find_by_email(&mut conn, &email)
        .map_err(|e| CliError::Failed(e.into()))?
        .ok_or_else(|| CliError::Conflict("no user with this email".into()))?;
    if user.disabled {
        return Err(CliError::Conflict("the user is disabled".into()));
    }
    let (_, denied) = new.scopes.split_by_role(user.role());
    if !denied.is_empty() {
        return Err(CliError::Conflict(format!(
            "a user with the role {} cannot hold: {denied}",
            user.role()
        )));
    }
    let created = api_keys::create_for_user(&mut conn, &user.id, &new, MintedBy::Owner, Utc::now())
        .map_err(|e| match e {
            ApiError::BadRequest(m) => CliError::Conflict(m),
            other => CliError::Failed(anyhow::anyhow!("{other:?}")),
        })?;
    println!(
        "{}",
        serde_json::json!({ "id": created.id, "key": created.key })
    );
    Ok(())
}

/// `api-key rotate`: exit 2 for a bad grace, 1 for a key that cannot be
/// rotated (unknown, revoked, expired, or already being replaced).
fn rotate_api_key(id: &str, grace_hours: i64) -> Result<(), CliError> {
    let grace = api_keys::Grace::hours(grace_hours)
        .map_err(|e| CliError::Invalid(format!("invalid --grace-hours: {e}")))?;
    let mut conn = open_connection()?;
    let rotated = api_keys::rotate_key(
        &mut conn,
        api_keys::Rotator::Owner(None),
        id,
        grace,
        Utc::now(),
    )
    .map_err(|e| match e {
        ApiError::NotFound(_) => {
            CliError::Conflict("no such API key (or revoked or expired)".into())
        }
        ApiError::Conflict(m) | ApiError::BadRequest(m) => CliError::Conflict(m),
        other => CliError::Failed(anyhow::anyhow!("{other:?}")),
    })?;
    log::warn!(
        "API key {} replaced by {}; it works until {}",
        rotated.old_id,
        rotated.new.id,
        rotated.old_works_until
    );
    println!(
        "{}",
        serde_json::json!({ "id": rotated.new.id, "key": rotated.new.key })
    );
    Ok(())
}

fn client(cmd: ClientCommand) -> Result<(), CliError> {
    let args = match cmd {
        ClientCommand::Create(args) => args,
        ClientCommand::List(format) => return list_clients(&format),
        ClientCommand::RotateSecret { id, grace_hours } => {
            return rotate_client_secret(&id, grace_hours)
        }
        ClientCommand::Disable { id } => return set_client_disabled(&id, true),
        ClientCommand::Enable { id } => return set_client_disabled(&id, false),
        ClientCommand::SetPlan { id, plan } => {
            let plan = plan.plan()?;
            let mut conn = open_connection()?;
            let changed = Client::set_plan(&mut conn, &id, plan, Utc::now().naive_utc())
                .map_err(|e| CliError::Failed(e.into()))?;
            if !changed {
                return Err(CliError::Conflict("no such client".into()));
            }
            println!(
                "{}",
                serde_json::json!({ "client_id": id, "plan": plan.name(), "rate_limit": plan.limit() })
            );
            return Ok(());
        }
    };
    let plan = args.plan.plan()?;
    refuse_useless_flags(&args)?;
    let mut new = NewClient::parse(args.into()).map_err(CliError::Invalid)?;
    new.plan = plan;
    let mut conn = open_connection()?;
    let registered = clients::register(&mut conn, new, Utc::now().naive_utc())
        .map_err(|e| CliError::Failed(e.into()))?;
    let out = match registered.secret {
        Some(secret) => {
            serde_json::json!({ "client_id": registered.client.id, "client_secret": secret })
        }
        None => serde_json::json!({ "client_id": registered.client.id }),
    };
    println!("{out}");
    Ok(())
}

fn set_client_disabled(id: &str, disabled: bool) -> Result<(), CliError> {
    let mut conn = open_connection()?;
    let changed = Client::set_disabled(&mut conn, id, disabled, Utc::now().naive_utc())
        .map_err(|e| CliError::Failed(e.into()))?;
    if !changed {
        return Err(CliError::Conflict("no such client".into()));
    }
    println!(
        "{}",
        serde_json::json!({ "client_id": id, "disabled": disabled })
    );
    Ok(())
}

fn set_disabled(email: &str, disabled: bool, now: chrono::NaiveDateTime) -> Result<(), CliError> {
    let email =
        Email::parse(email).map_err(|m| CliError::Invalid(format!("invalid --email: {m}")))?;
    let mut conn = open_connection()?;
    let user = accounts::set_disabled(&mut conn, &email, disabled, now).map_err(account_error)?;
    println!(
        "{}",
        serde_json::json!({ "id": user.id, "disabled": user.disabled })
    );
    Ok(())
}

fn account_error(e: AccountError) -> CliError {
    match e {
        AccountError::DuplicateEmail | AccountError::UnknownUser => {
            CliError::Conflict(e.to_string())
        }
        AccountError::Database(e) => CliError::Failed(e.into()),
        AccountError::Hashing(e) => CliError::Failed(e),
    }
}

/// A new password: on a terminal, asked for twice without echo (a typo
/// would lock the account out); otherwise the whole of standard input.
fn read_new_password() -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return read_password_from_stdin();
    }
    let prompt = |text: &str| {
        rpassword::prompt_password(text)
            .map_err(|e| CliError::Invalid(format!("cannot read the password: {e}")))
    };
    let first = prompt("Password (at least 12 characters): ")?;
    let again = prompt("The same password again: ")?;
    if !crate::tokens::constant_time_eq(first.as_bytes(), again.as_bytes()) {
        return Err(CliError::Invalid("the two passwords differ".into()));
    }
    Ok(first)
}

/// The whole of stdin, without one trailing newline (`echo` adds it).
fn read_password_from_stdin() -> Result<String, CliError> {
    let mut raw = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut raw)
        .map_err(|_| {
            CliError::Invalid("the password on standard input is not valid UTF-8".into())
        })?;
    let trimmed = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(&raw);
    Ok(trimmed.to_owned())
}

/// Flags of `client create` that cannot work with the grant types asked
/// for: redirect URIs and PKCE belong to the authorization code flow
/// (`--public --introspect` is clap's `conflicts_with`). Exit 2.
fn refuse_useless_flags(args: &ClientCreateArgs) -> Result<(), CliError> {
    let code_flow = args.grant_types.is_empty()
        || args
            .grant_types
            .iter()
            .any(|g| g == GrantType::AuthorizationCode.as_str());
    if code_flow {
        return Ok(());
    }
    if !args.redirect_uris.is_empty() {
        return Err(CliError::Invalid(
            "--redirect-uri needs --grant-type authorization_code: without it no authorization response is ever sent"
                .into(),
        ));
    }
    if args.require_pkce {
        return Err(CliError::Invalid(
            "--require-pkce needs --grant-type authorization_code: PKCE protects the authorization code"
                .into(),
        ));
    }
    Ok(())
}

/// `client rotate-secret`: exit 2 for a bad grace or a public client (it
/// has no secret), 1 for an unknown client.
fn rotate_client_secret(id: &str, grace_hours: i64) -> Result<(), CliError> {
    let grace = api_keys::Grace::hours(grace_hours).map_err(|_| {
        CliError::Invalid(format!(
            "invalid --grace-hours: a whole number of hours from 0 (at once) to {}",
            api_keys::Grace::MAX_HOURS
        ))
    })?;
    let mut conn = open_connection()?;
    let rotated = clients::rotate_secret(&mut conn, id, grace.duration(), Utc::now().naive_utc())
        .map_err(|e| match e {
        clients::RotateError::Public => CliError::Invalid(e.to_string()),
        clients::RotateError::Unknown | clients::RotateError::Changed => {
            CliError::Conflict(e.to_string())
        }
        clients::RotateError::Database(e) => CliError::Failed(e.into()),
    })?;
    let until = rotated.old_works_until.map(rfc3339);
    log::warn!(
        "client {id} has a new secret; the old one {}",
        until.as_deref().map_or_else(
            || "stopped working".to_owned(),
            |u| format!("works until {u}")
        )
    );
    println!(
        "{}",
        serde_json::json!({
            "client_id": id,
            "client_secret": rotated.secret,
            "old_secret_works_until": until,
        })
    );
    Ok(())
}

fn list_users(format: &ListFormat) -> Result<(), CliError> {
    let mut conn = open_connection()?;
    let mut users = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page =
            User::page(&mut conn, after.as_deref(), 500).map_err(|e| CliError::Failed(e.into()))?;
        let done = page.len() < 500;
        after = page.last().map(|u| u.id.clone());
        users.extend(page);
        if done {
            break;
        }
    }
    let rows = users.iter().map(|u| {
        let plan = u.plan().ok();
        serde_json::json!({
            "id": u.id,
            "email": u.email,
            "role": u.role.to_string(),
            "plan": u.plan,
            "rate_limit": plan.map(|p| p.limit()),
            "disabled": u.disabled,
            "created_at": rfc3339(u.created_at),
        })
    });
    print_list(
        format,
        &["id", "email", "role", "plan", "disabled", "created_at"],
        rows.collect(),
    )
}

fn list_clients(format: &ListFormat) -> Result<(), CliError> {
    let mut conn = open_connection()?;
    let all = Client::list(&mut conn).map_err(|e| CliError::Failed(e.into()))?;
    let now = Utc::now().naive_utc();
    let rows = all.iter().map(|c| {
        serde_json::json!({
            "client_id": c.id,
            "name": c.name,
            "type": if c.is_public() { "public" } else { "confidential" },
            "grant_types": c.grant_types,
            "scope": c.scopes,
            "redirect_uris": c.redirect_uris.lines().collect::<Vec<_>>(),
            "cors_origins": c.allowed_origins().iter().map(|o| o.as_str().to_owned()).collect::<Vec<_>>(),
            "token_endpoint_auth_method": c.token_endpoint_auth_method,
            "introspect": c.can_introspect,
            "plan": c.plan,
            "old_secret_works_until": c.previous_secret_expires_at.filter(|until| *until > now).map(rfc3339),
            "disabled": c.disabled,
            "created_at": rfc3339(c.created_at),
        })
    });
    print_list(
        format,
        &[
            "client_id",
            "name",
            "type",
            "grant_types",
            "scope",
            "disabled",
            "created_at",
        ],
        rows.collect(),
    )
}

fn list_api_keys(email: &str, format: &ListFormat) -> Result<(), CliError> {
    let email =
        Email::parse(email).map_err(|m| CliError::Invalid(format!("invalid --email: {m}")))?;
    let mut conn = open_connection()?;
    let user = User::find_by_email(&mut conn, &email)
        .map_err(|e| CliError::Failed(e.into()))?
        .ok_or_else(|| CliError::Conflict("no user with this email".into()))?;
    let keys = crate::db::models::ApiKeyRow::list_for_user(&mut conn, &user.id)
        .map_err(|e| CliError::Failed(e.into()))?;
    let rows = keys
        .iter()
        .map(|row| serde_json::to_value(api_keys::KeyView::of(row, None)).unwrap_or_default());
    print_list(
        format,
        &[
            "id",
            "name",
            "prefix",
            "scopes",
            "expires_at",
            "last_used_at",
            "replaced_by",
        ],
        rows.collect(),
    )
}

fn rfc3339(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Prints `rows` as one JSON array, or as a table of `columns` (their
/// values as text: strings bare, arrays space-separated, null as `-`).
fn print_list(
    format: &ListFormat,
    columns: &[&str],
    rows: Vec<serde_json::Value>,
) -> Result<(), CliError> {
    if format.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    print!("{}", table(columns, &rows));
    Ok(())
}

fn cell(value: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    let text = match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| cell(Some(i)))
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
    };
    // A name is typed by whoever registered it: no control characters
    // reach the terminal.
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A plain-text table: upper-case headers, columns padded to their widest
/// cell, two spaces apart.
fn table(columns: &[&str], rows: &[serde_json::Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(row.get(c))).collect())
        .collect();
    let headers: Vec<String> = columns
        .iter()
        .map(|c| c.replace('_', " ").to_uppercase())
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in std::iter::once(&headers).chain(cells.iter()) {
        let padded: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(text, w)| format!("{text:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag of every command says what it is for (`--help`).
    #[test]
    fn every_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "dzdesk-auth", &mut missing);
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }

    #[test]
    fn tables_pad_columns_and_keep_control_characters_off_the_terminal() {
        let rows = vec![
            serde_json::json!({"id": "client_1", "name": "A\u{1b}[2Jb", "scope": ["x", "y"]}),
            serde_json::json!({"id": "c2", "name": null, "scope": []}),
        ];
        assert_eq!(
            super::table(&["id", "name", "scope"], &rows),
            "ID        NAME    SCOPE\nclient_1  A?[2Jb  x y\nc2        -\n"
        );
    }
}
