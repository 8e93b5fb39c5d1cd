DROP TABLE server_secrets;
DROP TABLE sessions;
DROP TABLE users;
