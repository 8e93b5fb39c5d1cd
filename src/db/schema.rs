// One schema for both backends: only column types that PostgreSQL and SQLite
// share (Text, BigInt, Integer, Bool, Timestamp, Binary). Keep it in step with
// both migration folders.

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        role -> Text,
        password_hash -> Text,
        disabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        ip_allowlist -> Text,
        plan -> Text,
        rate_limit -> Nullable<BigInt>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        secret -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    clients (id) {
        id -> Text,
        name -> Text,
        confidential -> Bool,
        secret_hash -> Nullable<Text>,
        redirect_uris -> Text,
        scopes -> Text,
        grant_types -> Text,
        require_pkce -> Bool,
        disabled -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        can_introspect -> Bool,
        registration_token_hash -> Nullable<Text>,
        registered_by -> Nullable<Text>,
        plan -> Text,
        rate_limit -> Nullable<BigInt>,
        token_endpoint_auth_method -> Text,
        previous_secret_hash -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamp>,
        cors_origins -> Text,
        post_logout_redirect_uris -> Text,
        require_par -> Bool,
    }
}

diesel::table! {
    pushed_requests (id) {
        id -> Text,
        client_id -> Text,
        params -> Text,
        browser_hash -> Nullable<Text>,
        reauth_after -> Nullable<Timestamp>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    consents (user_id, client_id) {
        user_id -> Text,
        client_id -> Text,
        scopes -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    grants (id) {
        id -> Text,
        client_id -> Text,
        user_id -> Nullable<Text>,
        scopes -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        auth_time -> Nullable<Timestamp>,
        sid -> Nullable<Text>,
    }
}

diesel::table! {
    authorization_codes (id) {
        id -> Text,
        client_id -> Text,
        user_id -> Text,
        redirect_uri -> Text,
        scopes -> Text,
        code_challenge -> Nullable<Text>,
        code_challenge_method -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        grant_id -> Nullable<Text>,
        nonce -> Nullable<Text>,
        auth_time -> Nullable<Timestamp>,
        sid -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Text,
        grant_id -> Text,
        scopes -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        algorithm -> Text,
        private_key -> Binary,
        public_jwk -> Text,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    revoked_access_tokens (jti) {
        jti -> Text,
        grant_id -> Text,
        revoked_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        key_hash -> Text,
        prefix -> Text,
        scopes -> Text,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        parent_id -> Nullable<Text>,
        parent_grant_id -> Nullable<Text>,
        replaced_by -> Nullable<Text>,
    }
}

diesel::table! {
    api_key_usage (id) {
        id -> BigInt,
        key_id -> Text,
        at -> Timestamp,
        method -> Text,
        path -> Text,
        status -> Integer,
        client_ip -> Nullable<Text>,
        duration_ms -> Integer,
        requests -> Integer,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(refresh_tokens -> grants (grant_id));
diesel::joinable!(grants -> clients (client_id));
diesel::joinable!(grants -> users (user_id));
diesel::joinable!(consents -> clients (client_id));
diesel::joinable!(pushed_requests -> clients (client_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    server_secrets,
    clients,
    consents,
    grants,
    authorization_codes,
    refresh_tokens,
    signing_keys,
    revoked_access_tokens,
    api_keys,
    api_key_usage,
    pushed_requests,
);
