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

diesel::joinable!(sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(users, sessions, server_secrets);
