-- Blnk's identities: the people and organisations balances belong to, with field tokenization.
--
-- Tokenization replaces a personal field's value with an AES-256-GCM envelope (kit.crypto,
-- bound to the identity id and the field name) and records the field in `tokenized_fields`.
-- The column, not the metadata, is the record of which fields are sealed: the API renders it
-- as Blnk's `meta_data.tokenized_fields`, and a metadata merge cannot forge or erase it. The
-- CHECKs below prove what the code promises: only Blnk's seven tokenizable fields are ever
-- listed, each listed field holds an envelope, and a plain value is never longer than the API
-- allows (an envelope of a 255-character value is about 500 characters).

CREATE FUNCTION ledger.identity_field_names_are_tokenizable(names TEXT[]) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(bool_and(name IN ('FirstName', 'LastName', 'OtherNames', 'EmailAddress',
                                      'PhoneNumber', 'Street', 'PostCode')), true)
           AND cardinality(names) = (SELECT count(DISTINCT name) FROM unnest(names) AS name)
      FROM unnest(names) AS name
$$;

CREATE TABLE ledger.identities (
    identity_id        TEXT COLLATE "C" PRIMARY KEY CHECK (identity_id ~ '^idt_[0-9a-f-]{36}$'),
    identity_type      TEXT NOT NULL DEFAULT '' CHECK (length(identity_type) <= 64),
    organization_name  TEXT NOT NULL DEFAULT '' CHECK (length(organization_name) <= 255),
    category           TEXT NOT NULL DEFAULT '' CHECK (length(category) <= 255),
    first_name         TEXT NOT NULL DEFAULT '' CHECK (length(first_name) <= 1024),
    last_name          TEXT NOT NULL DEFAULT '' CHECK (length(last_name) <= 1024),
    other_names        TEXT NOT NULL DEFAULT '' CHECK (length(other_names) <= 1024),
    gender             TEXT NOT NULL DEFAULT '' CHECK (length(gender) <= 64),
    email_address      TEXT NOT NULL DEFAULT '' CHECK (length(email_address) <= 1024),
    phone_number       TEXT NOT NULL DEFAULT '' CHECK (length(phone_number) <= 1024),
    nationality        TEXT NOT NULL DEFAULT '' CHECK (length(nationality) <= 255),
    street             TEXT NOT NULL DEFAULT '' CHECK (length(street) <= 1024),
    country            TEXT NOT NULL DEFAULT '' CHECK (length(country) <= 255),
    state              TEXT NOT NULL DEFAULT '' CHECK (length(state) <= 255),
    post_code          TEXT NOT NULL DEFAULT '' CHECK (length(post_code) <= 1024),
    city               TEXT NOT NULL DEFAULT '' CHECK (length(city) <= 255),
    dob                TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    meta_data          JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(meta_data) = 'object'),
    tokenized_fields   TEXT[] NOT NULL DEFAULT '{}'
                       CHECK (ledger.identity_field_names_are_tokenizable(tokenized_fields)),
    -- A sealed field holds an envelope ("v1.<kek id>.<sealed key>.<sealed value>"); a field that
    -- is not listed may hold anything, so only the listed ones are checked.
    CONSTRAINT identities_sealed_first_name
        CHECK (NOT 'FirstName' = ANY (tokenized_fields) OR first_name ~ '^v1\.[0-9a-f]{16}\.'),
    CONSTRAINT identities_sealed_last_name
        CHECK (NOT 'LastName' = ANY (tokenized_fields) OR last_name ~ '^v1\.[0-9a-f]{16}\.'),
    CONSTRAINT identities_sealed_other_names
        CHECK (NOT 'OtherNames' = ANY (tokenized_fields) OR other_names ~ '^v1\.[0-9a-f]{16}\.'),
    CONSTRAINT identities_sealed_email_address
        CHECK (NOT 'EmailAddress' = ANY (tokenized_fields) OR email_address ~ '^v1\.[0-9a-f]{16}\.'),
    CONSTRAINT identities_sealed_phone_number
        CHECK (NOT 'PhoneNumber' = ANY (tokenized_fields) OR phone_number ~ '^v1\.[0-9a-f]{16}\.'),
    CONSTRAINT identities_sealed_street
        CHECK (NOT 'Street' = ANY (tokenized_fields) OR street ~ '^v1\.[0-9a-f]{16}\.'),
    CONSTRAINT identities_sealed_post_code
        CHECK (NOT 'PostCode' = ANY (tokenized_fields) OR post_code ~ '^v1\.[0-9a-f]{16}\.')
);

CREATE INDEX identities_created_at ON ledger.identities (created_at);
CREATE INDEX identities_country_created_at ON ledger.identities (country, created_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.identities TO dwaybank_service;
