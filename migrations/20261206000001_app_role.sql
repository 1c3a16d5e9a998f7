-- Least privilege (hardening issue, part 8): the API and the workers connect as `nimbus_app`,
-- which reads and writes rows but owns nothing. Altering, dropping or truncating a table and
-- switching its triggers off belong to the owner (the role that runs these migrations), so the
-- runtime credentials cannot undo the audit log's protection (20261126120200_audit_log.sql).
-- README, "Database roles".
--
-- Roles belong to the cluster, not to one database. Whoever provisions the cluster creates the
-- role with LOGIN and a password (infra/scripts/services.sh does for `make dev` and `make test`);
-- when it is missing it is created here, without LOGIN, for the operator to complete. That needs
-- CREATEROLE; an owner without it gets an error naming the statement to run first.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'nimbus_app') then
        begin
            create role nimbus_app nologin;
        exception
            -- Another database's migration created it meanwhile (roles are cluster-wide).
            when duplicate_object or unique_violation then null;
            when insufficient_privilege then
                raise exception 'role nimbus_app does not exist and % may not create it', current_user
                    using hint = 'create it first: create role nimbus_app login password ''...''';
        end;
    end if;
end;
$$;

grant usage on schema public to nimbus_app;
grant select, insert, update, delete on all tables in schema public to nimbus_app;
grant usage, select on all sequences in schema public to nimbus_app;
grant execute on all functions in schema public to nimbus_app;

-- What later migrations create gets the same, as long as the same owner runs them (default
-- privileges apply to objects created by the role that set them).
alter default privileges in schema public grant select, insert, update, delete on tables to nimbus_app;
alter default privileges in schema public grant usage, select on sequences to nimbus_app;
alter default privileges in schema public grant execute on functions to nimbus_app;

-- Append-only by privilege as well as by trigger.
revoke update, delete on audit_log from nimbus_app;
-- The migration history is the owner's; the API only reads it to check that the schema is current.
do $$
begin
    if to_regclass('_sqlx_migrations') is not null then
        revoke insert, update, delete on _sqlx_migrations from nimbus_app;
    end if;
end;
$$;

-- PostgreSQL 15 no longer lets every role create objects in `public`; clusters initialised by
-- older versions still do.
do $$
begin
    if has_schema_privilege('public', 'public', 'CREATE') then
        revoke create on schema public from public;
    end if;
end;
$$;
