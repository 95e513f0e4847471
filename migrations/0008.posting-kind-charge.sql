-- A posting kind for money an account pays Tollgate from its credits: captured holds and
-- metered usage. (An enum addition gets a migration of its own.)
-- depends: 0007.transactions

SET LOCAL ROLE tollgate_owner;

ALTER TYPE tollgate.posting_kind ADD VALUE 'charge';
