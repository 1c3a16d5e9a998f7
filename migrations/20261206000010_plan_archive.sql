-- Operators manage plans (issue 13): a plan some tenant has used is archived rather than deleted.
-- An archived plan keeps its tenants and its prices but no tenant can be moved onto it.
alter table plans add column archived_at timestamptz;
