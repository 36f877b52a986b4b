-- Connected wallets, their balances and tokenised payment cards (specification section 2.3).
--
-- Deviations from the specification (see 0002 for those shared by every table): TIMESTAMPTZ,
-- NOT NULL on created_at / updated_at, indexes on the wallet_id / user_id foreign keys, and
-- these CHECKs that every valid row satisfies:
--   * currency codes are upper-case letters or digits, 3 to 10 long (ISO 4217 and the common
--     crypto tickers fit; the column is VARCHAR(10));
--   * a card's last_four is four digits, its expiry month is 1-12 and its expiry year is a
--     four-digit year from 2000 (no card on file expires earlier).
-- Money stays DECIMAL(18,8) as specified. Balances carry no sign CHECK: a bank account or a
-- card wallet may legitimately be overdrawn. sync_status has no CHECK because the
-- specification names no set of values for it.

CREATE TABLE connected_wallets (
    id                    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id               UUID REFERENCES users(id) ON DELETE CASCADE,
    wallet_type           VARCHAR(50) NOT NULL
                          CHECK (wallet_type IN ('apple_pay', 'google_pay', 'metamask',
                                                 'manual_card', 'bank_account')),
    external_id           VARCHAR(255),  -- the wallet's or card's identifier at its provider
    encrypted_credentials TEXT,          -- connection credentials, envelope-encrypted
    display_name          VARCHAR(100),
    currency              VARCHAR(10) DEFAULT 'USD',
    metadata              JSONB DEFAULT '{}',
    balance_cache         DECIMAL(18,8),
    balance_updated_at    TIMESTAMPTZ,
    is_active             BOOLEAN DEFAULT true,
    last_sync_at          TIMESTAMPTZ,
    sync_status           VARCHAR(20) DEFAULT 'pending',
    created_at            TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT connected_wallets_currency_code_check CHECK (currency ~ '^[A-Z0-9]{3,10}$')
);

CREATE INDEX idx_connected_wallets_user_id ON connected_wallets(user_id);

CREATE TABLE wallet_balances (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    wallet_id         UUID REFERENCES connected_wallets(id) ON DELETE CASCADE,
    balance           DECIMAL(18,8) NOT NULL,
    available_balance DECIMAL(18,8),
    currency          VARCHAR(10) NOT NULL,
    balance_type      VARCHAR(20) DEFAULT 'current'
                      CHECK (balance_type IN ('current', 'available', 'pending')),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT wallet_balances_currency_code_check CHECK (currency ~ '^[A-Z0-9]{3,10}$')
);

CREATE INDEX idx_wallet_balances_wallet_id ON wallet_balances(wallet_id);

-- PCI DSS: the card number itself is never stored, only its token and last four digits.
CREATE TABLE payment_cards (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    wallet_id       UUID REFERENCES connected_wallets(id) ON DELETE CASCADE,
    card_token      VARCHAR(255) NOT NULL,  -- the tokenised card number
    last_four       CHAR(4) NOT NULL,
    card_brand      VARCHAR(20),
    expiry_month    INTEGER,
    expiry_year     INTEGER,
    cardholder_name VARCHAR(100),
    billing_address JSONB,
    is_primary      BOOLEAN DEFAULT false,
    is_active       BOOLEAN DEFAULT true,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT payment_cards_last_four_digits_check CHECK (last_four ~ '^[0-9]{4}$'),
    CONSTRAINT payment_cards_expiry_month_check CHECK (expiry_month BETWEEN 1 AND 12),
    CONSTRAINT payment_cards_expiry_year_check CHECK (expiry_year BETWEEN 2000 AND 9999)
);

CREATE INDEX idx_payment_cards_wallet_id ON payment_cards(wallet_id);
