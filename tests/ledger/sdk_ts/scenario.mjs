// Drives the ledger's Blnk-compatible API with Blnk's official TypeScript SDK, unmodified.
//
// Usage: node scenario.mjs <ledger base URL> <secure ledger base URL>
//        with BLNK_MASTER_KEY set to the secure server's master key.
//
// The plain server (no API key) takes every call family but the key-guarded ones; the secure
// server takes identity tokenization, hooks and API keys with the master key. Each call's answer
// is kept exactly as the SDK returned it ({status, message, data, error}) under a step name, and
// the whole record is printed as ONE JSON document on stdout: {"steps": {...}, "ids": {...}}.
// The pytest module tests/ledger/test_sdk_typescript.py runs this once and asserts on it. The SDK
// logs through a logger that writes to stderr, so stdout stays a single JSON document.
//
// Every wait is bounded: each request by the SDK's timeout, each poll by a deadline, and the
// whole run by a watchdog that prints what it has and exits non-zero.

import {randomUUID} from 'node:crypto';
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import {tmpdir} from 'node:os';
import {join} from 'node:path';

const require = createRequire(import.meta.url);
const {BlnkInit} = require('@blnkfinance/blnk-typescript');
const sdkVersion = require('@blnkfinance/blnk-typescript/package.json').version;

const REQUEST_TIMEOUT_MS = 10_000; // per SDK request; the SDK answers 408 past it
const POLL_INTERVAL_MS = 50;
const RECONCILIATION_WAIT_MS = 20_000; // a run over two records finishes far sooner
const ASYNC_BULK_WAIT_MS = 10_000; // a one-item background batch lands in milliseconds
const SCENARIO_TIMEOUT_MS = 90_000; // the Python side kills the process a little later

const [ledgerUrl, secureLedgerUrl] = process.argv.slice(2);
const masterKey = process.env.BLNK_MASTER_KEY ?? '';
if (!ledgerUrl || !secureLedgerUrl || !masterKey) {
  process.stderr.write(
    'usage: BLNK_MASTER_KEY=<key> node scenario.mjs <ledger URL> <secure ledger URL>\n',
  );
  process.exit(64);
}

const steps = {};
const ids = {sdk_version: sdkVersion};

function emit(extra = {}) {
  process.stdout.write(JSON.stringify({steps, ids, ...extra}) + '\n');
}

const watchdog = setTimeout(() => {
  emit({fatal: `scenario did not finish within ${SCENARIO_TIMEOUT_MS} ms`});
  process.exit(2);
}, SCENARIO_TIMEOUT_MS);
watchdog.unref();

const stderrLogger = {
  info: () => {},
  debug: () => {},
  error: (message, ...meta) => {
    process.stderr.write(`sdk: ${message} ${meta.map(m => safeText(m)).join(' ')}\n`);
  },
};

function safeText(value) {
  try {
    return typeof value === 'string' ? value : JSON.stringify(value);
  } catch {
    return String(value);
  }
}

function client(apiKey, baseUrl) {
  return BlnkInit(apiKey, {baseUrl, timeout: REQUEST_TIMEOUT_MS, logger: stderrLogger});
}

/** Keeps one SDK answer under `name`, as the SDK returned it. */
function keep(name, response) {
  if (name in steps) {
    throw new Error(`step ${name} recorded twice`);
  }
  steps[name] = {
    status: response.status,
    message: response.message ?? null,
    data: response.data ?? null,
    error: response.error ?? null,
  };
  return response;
}

/** Keeps an answer that later steps build on; its data must be there. */
function need(name, response, status) {
  keep(name, response);
  if (response.status !== status || response.data === null || response.data === undefined) {
    throw new Error(`step ${name} answered ${response.status}: ${safeText(response)}`);
  }
  return response.data;
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

const hex = () => randomUUID().replaceAll('-', '').slice(0, 12);
const ref = () => `ts-ref-${randomUUID()}`;

// ---------------------------------------------------------------- the plain server

const blnk = client('', ledgerUrl);
const marker = `ts${hex()}`;
const world = `@TsWorld${marker}`; // an indicator no other test uses, so its balance is exact
ids.marker = marker;
ids.world = world;

function transfer(source, destination, preciseAmount, extra = {}) {
  return {
    precise_amount: preciseAmount,
    precision: 100,
    reference: ref(),
    currency: 'USD',
    description: `ts-sdk ${marker}`,
    source,
    destination,
    skip_queue: true,
    ...extra,
  };
}

async function system() {
  keep('system.health', await blnk.System.health());
}

async function identities() {
  const person = {
    identity_type: 'individual',
    first_name: 'Ada',
    last_name: `Lovelace-${marker}`,
    email_address: `ada-${marker}@example.com`,
    phone_number: '+2348012345678',
    gender: 'female',
    dob: new Date('1990-12-10T00:00:00Z'), // the SDK serialises a Date to RFC 3339
    nationality: 'NG',
    country: 'NG',
    city: 'Lagos',
    meta_data: {marker},
  };
  const created = need('identity.create', await blnk.Identity.create(person), 201);
  ids.identity = created.identity_id;
  keep('identity.get', await blnk.Identity.get(ids.identity));
  keep('identity.list', await blnk.Identity.list());
  keep(
    'identity.update',
    await blnk.Identity.update(ids.identity, {
      ...person,
      city: 'Abuja',
      dob: '1990-12-10T00:00:00Z',
    }),
  );
  keep('identity.get_after_update', await blnk.Identity.get(ids.identity));
  keep('identity.get_unknown', await blnk.Identity.get(`idt_${randomUUID()}`));
  keep('identity.tokenized_fields', await blnk.Identity.getTokenizedFields(ids.identity));
  // The plain server has no tokenization secret, as a Blnk without one.
  keep('identity.tokenize_disabled', await blnk.Identity.tokenizeField(ids.identity, 'FirstName'));
  const spare = need(
    'identity.create_spare',
    await blnk.Identity.create({identity_type: 'organization', organization_name: `Org ${marker}`}),
    201,
  );
  keep('identity.delete', await blnk.Identity.delete(spare.identity_id));
  keep('identity.get_deleted', await blnk.Identity.get(spare.identity_id));
}

async function ledgers() {
  const created = need(
    'ledgers.create',
    await blnk.Ledgers.create({name: `ts-sdk ${marker}`, meta_data: {team: 'payments', marker}}),
    201,
  );
  ids.ledger = created.ledger_id;
  keep('ledgers.get', await blnk.Ledgers.get(ids.ledger));
  keep('ledgers.update', await blnk.Ledgers.update(ids.ledger, {name: `ts-sdk renamed ${marker}`}));
  keep('ledgers.get_after_update', await blnk.Ledgers.get(ids.ledger));
  keep('ledgers.get_unknown', await blnk.Ledgers.get(`ldg_${randomUUID()}`));
  // The SDK has no Ledgers.list; its way to list is the filter endpoint.
  keep(
    'ledgers.list_by_filter',
    await blnk.Search.filter(
      {filters: [{field: 'name', operator: 'eq', value: `ts-sdk renamed ${marker}`}]},
      'ledgers',
    ),
  );
}

async function balances() {
  const LB = blnk.LedgerBalances;
  ids.alice = need(
    'balances.create',
    await LB.create({ledger_id: ids.ledger, currency: 'USD', meta_data: {owner: 'alice'}}),
    201,
  ).balance_id;
  ids.bob = need(
    'balances.create_lifo',
    await LB.create({ledger_id: ids.ledger, currency: 'USD', allocation_strategy: 'LIFO'}),
    201,
  ).balance_id;
  ids.carol = need(
    'balances.create_with_lineage',
    await LB.create({
      ledger_id: ids.ledger,
      currency: 'USD',
      identity_id: ids.identity,
      track_fund_lineage: true,
    }),
    201,
  ).balance_id;
  keep(
    'balances.create_lineage_without_identity',
    await LB.create({ledger_id: ids.ledger, currency: 'USD', track_fund_lineage: true}),
  );
  keep('balances.get_new', await LB.get(ids.alice));
  keep('balances.get_unknown', await LB.get(`bln_${randomUUID()}`));
  keep('balances.update_identity', await LB.updateIdentity(ids.bob, {identity_id: ids.identity}));
  keep('balances.get_after_identity', await LB.get(ids.bob));
  keep('balances.snapshot', await LB.createSnapshot({batch_size: 100}));
  keep('balances.lineage', await LB.getLineage(ids.carol));
}

async function monitors() {
  const BM = blnk.BalanceMonitor;
  const monitor = {
    balance_id: ids.alice,
    condition: {field: 'balance', operator: '>', value: 1000, precision: 100},
    description: `ts-sdk ${marker}`,
    call_back_url: 'https://example.com/blnk/monitor',
  };
  ids.monitor = need('monitors.create', await BM.create(monitor), 201).monitor_id;
  // The SDK's validator knows `=` (Blnk Core itself compares `==`).
  keep(
    'monitors.create_equals',
    await BM.create({
      ...monitor,
      condition: {field: 'debit_balance', operator: '=', value: 5, precision: 100},
    }),
  );
  keep('monitors.get', await BM.get(ids.monitor));
  keep('monitors.list', await BM.list());
  keep(
    'monitors.update',
    await BM.update(ids.monitor, {
      ...monitor,
      description: `ts-sdk updated ${marker}`,
      condition: {field: 'balance', operator: '<', value: 2.5, precision: 100},
    }),
  );
  keep('monitors.get_after_update', await BM.get(ids.monitor));
  keep('monitors.delete', await BM.delete(ids.monitor));
  keep('monitors.get_deleted', await BM.get(ids.monitor));
}

async function transactions() {
  const T = blnk.Transactions;
  const LB = blnk.LedgerBalances;
  const funded = need(
    'transactions.fund',
    await T.create(transfer(world, ids.alice, 10_000, {allow_overdraft: true})),
    201,
  );
  ids.fund = funded.transaction_id;
  ids.fund_reference = funded.reference;
  const moved = need(
    'transactions.create',
    await T.create(transfer(ids.alice, ids.bob, 2_550)),
    201,
  );
  ids.move = moved.transaction_id;
  keep(
    'transactions.create_string_amount',
    await T.create(transfer(world, ids.carol, '1005', {allow_overdraft: true})),
  );
  const asFloat = transfer(world, ids.carol, 0, {allow_overdraft: true});
  delete asFloat.precise_amount;
  keep('transactions.create_float_amount', await T.create({...asFloat, amount: 10.05}));
  keep(
    'transactions.insufficient_funds',
    await T.create(transfer(ids.bob, ids.alice, 1_000_000)),
  );
  const duplicate = transfer(ids.alice, ids.bob, 10);
  keep('transactions.reference_first', await T.create(duplicate));
  keep('transactions.reference_again', await T.create(duplicate));
  keep(
    'transactions.queued',
    await T.create(transfer(ids.alice, ids.bob, 5, {skip_queue: false})),
  );
  keep('transactions.get', await T.get(ids.move));
  keep('transactions.get_by_reference', await T.getByReference(moved.reference));
  keep('transactions.get_unknown', await T.get(`txn_${randomUUID()}`));
  keep('transactions.lineage', await T.getLineage(ids.move));
  keep('transactions.recover_queue', await T.recoverQueue({threshold: '2m'}));

  // Inflight: a hold of 1,000, committed 300 then 2.00 (200), over-committed, voided twice.
  const expiry = new Date(Date.now() + 3_600_000); // a Date: the SDK writes RFC 3339 without ms
  ids.hold_expiry = expiry.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const hold = need(
    'inflight.create',
    await T.create(
      transfer(ids.alice, ids.bob, 1_000, {inflight: true, inflight_expiry_date: expiry}),
    ),
    201,
  );
  ids.hold = hold.transaction_id;
  keep('inflight.source_while_held', await LB.get(ids.alice));
  keep(
    'inflight.commit_partial',
    await T.updateStatus(ids.hold, {status: 'commit', precise_amount: 300, skip_queue: true}),
  );
  keep(
    'inflight.commit_amount',
    await T.updateStatus(ids.hold, {status: 'commit', amount: 2, skip_queue: true}),
  );
  keep(
    'inflight.over_commit',
    await T.updateStatus(ids.hold, {status: 'commit', precise_amount: 501, skip_queue: true}),
  );
  keep('inflight.void', await T.updateStatus(ids.hold, {status: 'void', skip_queue: true}));
  keep('inflight.void_again', await T.updateStatus(ids.hold, {status: 'void', skip_queue: true}));

  // Without skip_queue, the SDK's default: the void goes the queued way.
  const holdC = need(
    'inflight.create_default',
    await T.create(transfer(ids.alice, ids.bob, 100, {inflight: true})),
    201,
  ).transaction_id;
  ids.hold_c = holdC;
  keep('inflight.void_default', await T.updateStatus(holdC, {status: 'void'}));
  keep('inflight.after_void_default', await T.get(holdC));

  // A dry run answers the preview and writes nothing.
  const dryRun = transfer(ids.alice, ids.bob, 1, {dry_run: true});
  ids.dry_run_reference = dryRun.reference;
  keep('transactions.dry_run', await T.create(dryRun));
  keep('transactions.dry_run_not_written', await T.getByReference(dryRun.reference));

  // Bulk commit and void, one result per hold.
  const holdA = need(
    'inflight.create_bulk_a',
    await T.create(transfer(ids.alice, ids.bob, 100, {inflight: true})),
    201,
  ).transaction_id;
  const holdB = need(
    'inflight.create_bulk_b',
    await T.create(transfer(ids.alice, ids.bob, 100, {inflight: true})),
    201,
  ).transaction_id;
  ids.hold_a = holdA;
  ids.hold_b = holdB;
  keep(
    'inflight.bulk_commit',
    await T.bulkCommitInflight({
      transactions: [
        {transaction_id: holdA, precise_amount: 40},
        {transaction_id: `txn_${randomUUID()}`},
      ],
      skip_queue: true,
    }),
  );
  keep(
    'inflight.bulk_void',
    await T.bulkVoidInflight({transaction_ids: [holdB, holdA], skip_queue: true}),
  );

  // Refunds: with options, then without a body at all (the SDK sends none), then a second time.
  const toRefund = need('refund.transfer', await T.create(transfer(ids.alice, ids.bob, 400)), 201);
  keep('refund.refund', await T.refund(toRefund.transaction_id, {skip_queue: true}));
  keep('refund.again', await T.refund(toRefund.transaction_id, {skip_queue: true}));
  const toRefundBare = need(
    'refund.transfer_bare',
    await T.create(transfer(ids.alice, ids.bob, 7)),
    201,
  );
  keep('refund.without_options', await T.refund(toRefundBare.transaction_id));

  // Bulk create: an atomic batch one item of which cannot be covered, then one that can.
  const item = amount => ({...transfer(ids.bob, ids.alice, amount), skip_queue: undefined});
  const bobNow = need('bulk.bob_before', await LB.get(ids.bob), 200).balance;
  keep(
    'bulk.atomic_refused',
    await T.createBulk({transactions: [item(bobNow), item(1)], atomic: true, skip_queue: true}),
  );
  keep(
    'bulk.atomic_applied',
    await T.createBulk({transactions: [item(30), item(20)], atomic: true, skip_queue: true}),
  );
  const background = item(1);
  keep('bulk.run_async', await T.createBulk({transactions: [background], run_async: true}));
  // The batch lands in the background; wait for its item (bounded) so the balances below are final.
  const deadline = Date.now() + ASYNC_BULK_WAIT_MS;
  let landed = await T.getByReference(background.reference);
  while (landed.status === 404 && Date.now() < deadline) {
    await sleep(POLL_INTERVAL_MS);
    landed = await T.getByReference(background.reference);
  }
  keep('bulk.run_async_landed', landed);

  // Historical balances and the indicator balance.
  keep(
    'balances.at_future',
    await LB.getAt(ids.alice, {timestamp: '2999-01-01T00:00:00Z', from_source: true}),
  );
  keep('balances.at_past', await LB.getAt(ids.alice, {timestamp: '2000-01-01T00:00:00Z'}));
  keep('balances.at_bad_timestamp', await LB.getAt(ids.alice, {timestamp: 'yesterday'}));
  keep('balances.by_indicator', await LB.getByIndicator(world, 'USD'));
  keep('balances.alice_final', await LB.get(ids.alice, {from_source: true}));
  keep('balances.bob_final', await LB.get(ids.bob));
  keep('balances.carol_final', await LB.get(ids.carol));
}

async function metadata() {
  const M = blnk.Metadata;
  keep('metadata.transaction', await M.update(ids.move, {meta_data: {ts_sdk: marker, n: 1}}));
  keep('metadata.transaction_again', await M.update(ids.move, {meta_data: {n: 2}}));
  keep('metadata.ledger', await M.update(ids.ledger, {meta_data: {region: 'eu'}}));
  keep('metadata.balance', await M.update(ids.alice, {meta_data: {tier: 'gold'}}));
  keep('metadata.identity', await M.update(ids.identity, {meta_data: {kyc: 'passed'}}));
  keep('metadata.unknown', await M.update(`txn_${randomUUID()}`, {meta_data: {a: 1}}));
  keep('metadata.bad_prefix', await M.update(`nope_${randomUUID()}`, {meta_data: {a: 1}}));
  keep('metadata.transaction_after', await blnk.Transactions.get(ids.move));
}

async function search() {
  const S = blnk.Search;
  keep('search.transactions', await S.search({q: marker, query_by: 'description'}, 'transactions'));
  keep(
    'search.balances',
    await S.search({q: '*', filter_by: `balance_id:=${ids.alice}`}, 'balances'),
  );
  keep(
    'search.identities',
    await S.search({q: `Lovelace-${marker}`, query_by: 'last_name'}, 'identities'),
  );
  keep('search.bad_filter', await S.search({q: '*', filter_by: 'status:=[open'}, 'transactions'));
  keep(
    'search.filter_transactions',
    await S.filter(
      {
        filters: [
          {field: 'description', operator: 'eq', value: `ts-sdk ${marker}`},
          {field: 'status', operator: 'eq', value: 'APPLIED'},
          {field: 'source', operator: 'eq', value: ids.alice},
        ],
        logical_operator: 'and',
        sort_by: 'created_at',
        sort_order: 'asc',
        limit: 100,
      },
      'transactions',
    ),
  );
  keep(
    'search.filter_balances_count',
    await S.filter(
      {
        filters: [{field: 'ledger_id', operator: 'eq', value: ids.ledger}],
        include_count: true,
      },
      'balances',
    ),
  );
  keep(
    'search.filter_identities',
    await S.filter(
      {filters: [{field: 'identity_id', operator: 'in', values: [ids.identity]}]},
      'identities',
    ),
  );
  keep(
    'search.filter_bad_operator_field',
    await S.filter({filters: [{field: 'no_such_column', operator: 'eq', value: 1}]}, 'ledgers'),
  );
  // A started reindex is recorded for the whole database, which other tests read as "never
  // started"; so the SDK's reindex calls are driven through the status read and a refused start.
  keep('search.reindex_status', await S.getReindexStatus());
  keep('search.reindex_too_large', await S.startReindex({batch_size: 1_000_000}));
}

async function waitForRun(name, reconciliationId) {
  const deadline = Date.now() + RECONCILIATION_WAIT_MS;
  for (;;) {
    const response = await blnk.Reconciliation.get(reconciliationId);
    const status = response.data?.status;
    const finished = ['completed', 'failed'].includes(status);
    if (response.status !== 200 || finished || Date.now() > deadline) {
      return keep(name, response);
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

async function reconciliation() {
  const R = blnk.Reconciliation;
  // Amounts no other test uses, posted to the ledger, then stated by "the bank".
  const cents = 10_000_000 + Math.floor(Math.random() * 89_999_999);
  const major = (cents / 100).toFixed(2);
  const reference = `ts-stmt-${hex()}`;
  const posted = need(
    'recon.ledger_side',
    await blnk.Transactions.create(
      transfer(world, ids.carol, cents, {reference, allow_overdraft: true}),
    ),
    201,
  );
  ids.recon_transaction = posted.transaction_id;
  const today = new Date().toISOString().slice(0, 10);
  const folder = mkdtempSync(join(tmpdir(), 'ts-sdk-recon-'));
  try {
    const path = join(folder, 'statement.csv');
    writeFileSync(
      path,
      [
        'id,amount,reference,currency,description,date',
        `e1,${major},${reference},USD,bank side,${today}`,
        `e2,${major},ts-stmt-${hex()},USD,no such,${today}`,
        '',
      ].join('\n'),
    );
    const upload = need('recon.upload', await R.upload(path, 'bank-statement'), 200);
    const rule = need(
      'recon.rule_create',
      await R.createMatchingRule({
        name: `ts-rule ${marker}`,
        description: 'amount and reference',
        criteria: [
          {field: 'amount', operator: 'equals', allowable_drift: 0},
          {field: 'reference', operator: 'equals'},
        ],
      }),
      201,
    );
    ids.rule = rule.rule_id;
    keep(
      'recon.rule_update',
      await R.updateMatchingRule(ids.rule, {
        name: `ts-rule renamed ${marker}`,
        description: 'amount and reference',
        criteria: [
          {field: 'amount', operator: 'equals', allowable_drift: 0},
          {field: 'reference', operator: 'equals'},
        ],
      }),
    );
    keep(
      'recon.rule_invalid',
      await R.createMatchingRule({name: 'bad', description: 'no criteria', criteria: []}),
    );
    const started = need(
      'recon.start',
      await R.run({
        upload_id: upload.upload_id,
        strategy: 'one_to_one',
        matching_rule_ids: [ids.rule],
        dry_run: false,
      }),
      200,
    );
    await waitForRun('recon.get', started.reconciliation_id);
    const instant = need(
      'recon.start_instant',
      await R.runInstant({
        external_transactions: [
          {
            id: 'i1',
            amount: Number(major),
            reference,
            currency: 'USD',
            description: 'instant',
            date: `${today}T00:00:00Z`,
            source: 'bank',
          },
        ],
        strategy: 'one_to_one',
        matching_rule_ids: [ids.rule],
        dry_run: true,
      }),
      200,
    );
    await waitForRun('recon.get_instant', instant.reconciliation_id);
    keep('recon.get_unknown', await R.get(`recon_${randomUUID()}`));
    const spare = need(
      'recon.rule_create_spare',
      await R.createMatchingRule({
        name: `ts-spare ${marker}`,
        description: 'to delete',
        criteria: [{field: 'description', operator: 'contains', allowable_drift: 20}],
      }),
      201,
    );
    keep('recon.rule_delete', await R.deleteMatchingRule(spare.rule_id));
    keep('recon.rule_delete_again', await R.deleteMatchingRule(spare.rule_id));
    keep('recon.transaction_after', await blnk.Transactions.get(ids.recon_transaction));
  } finally {
    rmSync(folder, {recursive: true, force: true});
  }
}

// ---------------------------------------------------------------- the secure server

const master = client(masterKey, secureLedgerUrl);

async function tokenization() {
  const I = master.Identity;
  const created = need(
    'secure.identity_create',
    await I.create({
      identity_type: 'individual',
      first_name: 'Grace',
      last_name: 'Hopper',
      email_address: `grace-${marker}@example.com`,
      phone_number: '+15555550100',
    }),
    201,
  );
  const id = created.identity_id;
  keep('secure.tokenize_field', await I.tokenizeField(id, 'FirstName'));
  keep('secure.tokenize_field_again', await I.tokenizeField(id, 'FirstName'));
  keep('secure.tokenize', await I.tokenize(id, {fields: ['LastName', 'EmailAddress']}));
  keep('secure.tokenized_fields', await I.getTokenizedFields(id));
  keep('secure.identity_sealed', await I.get(id));
  keep('secure.detokenize_field', await I.detokenizeField(id, 'FirstName'));
  keep('secure.detokenize_all', await I.detokenize(id, {fields: []}));
  keep('secure.detokenize_some', await I.detokenize(id, {fields: ['LastName']}));
}

/** A hook that is registered and managed but never called (inactive, an unused port). */
function inactiveHook(fields) {
  return {url: 'http://127.0.0.1:9/never-called', active: false, ...fields};
}

async function hooks() {
  const H = master.Hooks;
  const created = [];
  try {
    const pre = need(
      'hooks.create',
      await H.create(
        inactiveHook({
          name: `ts-pre ${marker}`,
          type: 'PRE_TRANSACTION',
          timeout: 7,
          retry_count: 2,
        }),
      ),
      201,
    );
    created.push(pre.id);
    ids.hook = pre.id;
    const post = need(
      'hooks.create_post',
      await H.create(
        inactiveHook({
          name: `ts-post ${marker}`,
          type: 'POST_TRANSACTION',
          timeout: 5,
          retry_count: 0,
        }),
      ),
      201,
    );
    created.push(post.id);
    ids.hook_post = post.id;
    keep('hooks.get', await H.get(pre.id));
    keep('hooks.list', await H.list());
    keep('hooks.list_pre', await H.list({type: 'PRE_TRANSACTION'}));
    keep(
      'hooks.update',
      await H.update(
        pre.id,
        inactiveHook({
          name: `ts-renamed ${marker}`,
          type: 'POST_TRANSACTION',
          timeout: 3,
          retry_count: 1,
        }),
      ),
    );
    keep(
      'hooks.create_invalid',
      await H.create(
        inactiveHook({
          name: 'bad',
          url: 'ftp://example.com/h',
          type: 'PRE_TRANSACTION',
          timeout: 5,
          retry_count: 0,
        }),
      ),
    );
    keep('hooks.delete', await H.delete(pre.id));
    created.splice(created.indexOf(pre.id), 1);
    keep('hooks.get_deleted', await H.get(pre.id));
    keep('hooks.without_master', await client('', secureLedgerUrl).Hooks.list());
  } finally {
    for (const id of created) {
      await H.delete(id);
    }
    keep('hooks.list_after', await H.list());
  }
}

async function apiKeys() {
  const K = master.ApiKeys;
  const owner = `ts-owner-${marker}`;
  const created = need(
    'keys.create',
    await K.create({
      name: `ts-key ${marker}`,
      owner,
      scopes: ['ledgers:read'],
      expires_at: '2999-01-01T00:00:00Z',
    }),
    201,
  );
  ids.api_key = created.api_key_id;
  keep('keys.list', await K.list({owner}));
  const reader = client(created.key, secureLedgerUrl);
  const ledger = need(
    'keys.master_ledger',
    await master.Ledgers.create({name: `ts ${marker}`}),
    201,
  );
  keep('keys.reader_get', await reader.Ledgers.get(ledger.ledger_id));
  keep('keys.reader_create', await reader.Ledgers.create({name: 'refused'}));
  keep('keys.delete', await K.delete(created.api_key_id, {owner}));
  keep('keys.reader_after_revoke', await reader.Ledgers.get(ledger.ledger_id));
  keep('keys.delete_unknown', await K.delete(`api_key_${randomUUID()}`, {owner}));
  keep('keys.list_after', await K.list({owner}));
  const anonymous = client('', secureLedgerUrl);
  keep('keys.anonymous_health', await anonymous.System.health());
  keep('keys.anonymous_ledger', await anonymous.Ledgers.get(ledger.ledger_id));
  const stranger = client(`not-a-key-${marker}`, secureLedgerUrl);
  keep('keys.wrong_key', await stranger.Ledgers.get(ledger.ledger_id));
}

async function main() {
  await system();
  await identities();
  await ledgers();
  await balances();
  await monitors();
  await transactions();
  await metadata();
  await search();
  await reconciliation();
  await tokenization();
  await hooks();
  await apiKeys();
}

try {
  await main();
  emit();
  clearTimeout(watchdog);
} catch (error) {
  emit({fatal: error instanceof Error ? error.stack ?? error.message : String(error)});
  process.exitCode = 1;
}
