-- Identity: who a user is at an OpenID Connect provider. A user signs in through a provider
-- (browser, BFF) or presents the provider's JWT (API clients); both find the user by the pair
-- (issuer, subject), which the OIDC spec defines as the only stable identifier of an account
-- (OIDC Core §5.7: email is not stable and not unique across providers).

create table user_identities (
    id uuid primary key,
    tenant_id uuid not null,
    user_id uuid not null,
    issuer text not null,
    subject text not null,
    created_at timestamptz not null default now(),
    -- The last sign-in or token use that refreshed the user's profile and role.
    last_seen_at timestamptz not null default now(),
    constraint user_identities_user_fkey foreign key (tenant_id, user_id)
        references users (tenant_id, id) on delete cascade,
    constraint user_identities_issuer_subject_key unique (issuer, subject),
    constraint user_identities_issuer_check check (length(issuer) between 1 and 500),
    -- OIDC Core §2: `sub` is at most 255 ASCII characters.
    constraint user_identities_subject_check check (length(subject) between 1 and 255)
);
create index user_identities_user_idx on user_identities (tenant_id, user_id);
