-- Run once by the postgres container of docker-compose.yml on a new volume: the login role
-- the API connects as. It is only a member of tollgate_app, so it can call the api functions
-- and nothing else; migrations run as the superuser.
CREATE ROLE tollgate_app NOLOGIN;
CREATE ROLE tollgate_api LOGIN PASSWORD 'tollgate' IN ROLE tollgate_app;
