// Drives an EBS direct API endpoint with the official AWS SDK for JavaScript v3 (@aws-sdk/client-ebs): its own
// SigV4 signer, its own rest-json codec. Used by BlockRepl.Ebs.Endpoint.Tests to cross-check the endpoint.
//
//   node ebs-roundtrip.mjs <endpoint-url> [region]
//
// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Prints one JSON object on stdout
// ({"ok":true,...} or {"ok":false,"error":...}); exit code 0 only when every check passed.
import { createHash } from "node:crypto";
import {
  EBSClient,
  StartSnapshotCommand,
  PutSnapshotBlockCommand,
  CompleteSnapshotCommand,
  ListSnapshotBlocksCommand,
  ListChangedBlocksCommand,
  GetSnapshotBlockCommand,
} from "@aws-sdk/client-ebs";

const BLOCK = 524288;
const endpoint = process.argv[2];
const region = process.argv[3] ?? "us-east-1";
if (!endpoint) {
  console.error("usage: node ebs-roundtrip.mjs <endpoint-url> [region]");
  process.exit(2);
}

const client = new EBSClient({
  endpoint,
  region,
  credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY },
  maxAttempts: 1,
});

const sha = (buf) => createHash("sha256").update(buf).digest();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// Block contents: ref/ebs.md §5 vectors (k mod 251, zeros, 0x01) plus a few filled with their index.
function block(i) {
  const b = Buffer.alloc(BLOCK);
  if (i === 0) for (let k = 0; k < BLOCK; k++) b[k] = k % 251;
  else if (i === 3) b.fill(0);
  else if (i === 5) b.fill(1);
  else b.fill(i & 0xff);
  return b;
}

async function put(snapshotId, index, data) {
  const r = await client.send(new PutSnapshotBlockCommand({
    SnapshotId: snapshotId,
    BlockIndex: index,
    BlockData: data,
    DataLength: BLOCK,
    Checksum: sha(data).toString("base64"),
    ChecksumAlgorithm: "SHA256",
  }));
  check(r.Checksum === sha(data).toString("base64"), `PutSnapshotBlock echoes the checksum of block ${index}`);
  return sha(data);
}

async function complete(snapshotId, digestsByIndex) {
  const indices = [...digestsByIndex.keys()].sort((a, b) => a - b);
  const linear = createHash("sha256");
  for (const i of indices) linear.update(digestsByIndex.get(i));
  const r = await client.send(new CompleteSnapshotCommand({
    SnapshotId: snapshotId,
    ChangedBlocksCount: indices.length,
    Checksum: linear.digest("base64"),
    ChecksumAlgorithm: "SHA256",
    ChecksumAggregationMethod: "LINEAR",
  }));
  return { status: r.Status };
}

// Polls ListSnapshotBlocks until the snapshot is readable (ResourceNotFound while it is sealing).
async function waitReadable(snapshotId) {
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      await client.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, MaxResults: 100 }));
      return attempt;
    } catch (e) {
      if (e.name !== "ResourceNotFoundException") throw e;
      await sleep(100);
    }
  }
  throw new Error(`${snapshotId} never became readable`);
}

async function listAll(snapshotId) {
  const blocks = [];
  let pages = 0, emptyPages = 0, token;
  do {
    const r = await client.send(new ListSnapshotBlocksCommand({ SnapshotId: snapshotId, MaxResults: 100, NextToken: token }));
    pages++;
    if ((r.Blocks ?? []).length === 0 && r.NextToken) emptyPages++;
    check(r.BlockSize === BLOCK, "ListSnapshotBlocks BlockSize");
    check(r.ExpiryTime instanceof Date && !isNaN(r.ExpiryTime), "ListSnapshotBlocks ExpiryTime parses as a date");
    blocks.push(...(r.Blocks ?? []));
    token = r.NextToken;
  } while (token);
  return { blocks, pages, emptyPages };
}

async function main() {
  const result = { ok: false };
  // --- parent: a few blocks including an all-zero one, then 150 more so paging needs two pages of 100.
  const parent = await client.send(new StartSnapshotCommand({ VolumeSize: 1, Timeout: 60, Description: "ebs-js parent", Tags: [{ Key: "k", Value: "v" }] }));
  check(parent.Status === "pending" && /^snap-[0-9a-f]+$/.test(parent.SnapshotId), "StartSnapshot returns a pending snap-id");
  check(parent.BlockSize === BLOCK, "StartSnapshot BlockSize");
  const digests = new Map();
  for (const i of [0, 3, 5]) digests.set(i, await put(parent.SnapshotId, i, block(i)));
  const extra = [];
  for (let i = 100; i < 250; i++) extra.push(i);
  await Promise.all(extra.map(async (i) => digests.set(i, await put(parent.SnapshotId, i, block(i)))));
  const c = await client.send(new CompleteSnapshotCommand({
    SnapshotId: parent.SnapshotId,
    ChangedBlocksCount: 3,
    Checksum: "3hkXyCDr36rg2eDqBxV5ZdzJOm+UCWAYaDS7rB6bzM8=",
    ChecksumAlgorithm: "SHA256",
    ChecksumAggregationMethod: "LINEAR",
  })).catch((e) => e);
  check(c.name === "ValidationException", `a wrong ChangedBlocksCount is a ValidationException (got ${c.name})`);
  const done = await complete(parent.SnapshotId, digests);
  check(done.status === "pending", "CompleteSnapshot answers Status pending");
  result.waitAttempts = await waitReadable(parent.SnapshotId);

  const listed = await listAll(parent.SnapshotId);
  check(listed.blocks.length === digests.size, `ListSnapshotBlocks lists ${digests.size} blocks (got ${listed.blocks.length})`);
  check(listed.pages >= 2, "paging took at least two pages");
  const byIndex = new Map(listed.blocks.map((b) => [b.BlockIndex, b.BlockToken]));
  result.tokenHasReservedChars = [...byIndex.values()].every((t) => /[+/=]/.test(t));

  // --- GetSnapshotBlock: bytes and checksum of the vector blocks.
  for (const i of [0, 3, 5, 200]) {
    const r = await client.send(new GetSnapshotBlockCommand({ SnapshotId: parent.SnapshotId, BlockIndex: i, BlockToken: byIndex.get(i) }));
    const bytes = Buffer.from(await r.BlockData.transformToByteArray());
    check(bytes.equals(block(i)), `GetSnapshotBlock ${i} returns the bytes written`);
    check(r.DataLength === BLOCK && r.ChecksumAlgorithm === "SHA256", `GetSnapshotBlock ${i} length/algorithm headers`);
    check(r.Checksum === sha(bytes).toString("base64"), `GetSnapshotBlock ${i} checksum header`);
  }
  result.vectorChecksums = { 0: sha(block(0)).toString("base64"), 3: sha(block(3)).toString("base64"), 5: sha(block(5)).toString("base64") };

  // --- child: overwrite block 5 with zeros, add block 7; everything else is inherited.
  const child = await client.send(new StartSnapshotCommand({ VolumeSize: 1, ParentSnapshotId: parent.SnapshotId, Timeout: 60 }));
  check(child.ParentSnapshotId === parent.SnapshotId, "child names its parent");
  const childDigests = new Map();
  childDigests.set(5, await put(child.SnapshotId, 5, Buffer.alloc(BLOCK)));
  childDigests.set(7, await put(child.SnapshotId, 7, block(7)));
  await complete(child.SnapshotId, childDigests);
  await waitReadable(child.SnapshotId);

  const childList = await listAll(child.SnapshotId);
  check(childList.blocks.length === digests.size + 1, `child lists parent blocks plus its own (got ${childList.blocks.length})`);
  const changed = [];
  let token;
  do {
    const r = await client.send(new ListChangedBlocksCommand({ FirstSnapshotId: parent.SnapshotId, SecondSnapshotId: child.SnapshotId, MaxResults: 100, NextToken: token }));
    changed.push(...(r.ChangedBlocks ?? []));
    token = r.NextToken;
  } while (token);
  result.changedBlocks = changed.map((b) => ({ i: b.BlockIndex, first: !!b.FirstBlockToken, second: !!b.SecondBlockToken }));
  check(changed.length === 2 && changed[0].BlockIndex === 5 && changed[1].BlockIndex === 7, "ListChangedBlocks reports blocks 5 and 7");
  const got5 = await client.send(new GetSnapshotBlockCommand({ SnapshotId: child.SnapshotId, BlockIndex: 5, BlockToken: changed[0].SecondBlockToken }));
  check(Buffer.from(await got5.BlockData.transformToByteArray()).equals(Buffer.alloc(BLOCK)), "child block 5 reads back as zeros");
  const childMap = new Map(childList.blocks.map((b) => [b.BlockIndex, b.BlockToken]));
  const got0 = await client.send(new GetSnapshotBlockCommand({ SnapshotId: child.SnapshotId, BlockIndex: 0, BlockToken: childMap.get(0) }));
  check(Buffer.from(await got0.BlockData.transformToByteArray()).equals(block(0)), "child block 0 is inherited from the parent");

  // --- an unrelated snapshot: ListChangedBlocks refuses with UNRELATED_SNAPSHOTS.
  const other = await client.send(new StartSnapshotCommand({ VolumeSize: 1 }));
  await complete(other.SnapshotId, new Map());
  await waitReadable(other.SnapshotId);
  const unrelated = await client.send(new ListChangedBlocksCommand({ FirstSnapshotId: other.SnapshotId, SecondSnapshotId: child.SnapshotId })).catch((e) => e);
  check(unrelated.name === "ValidationException" && unrelated.Reason === "UNRELATED_SNAPSHOTS", `unrelated snapshots → ValidationException UNRELATED_SNAPSHOTS (got ${unrelated.name} ${unrelated.Reason})`);

  Object.assign(result, {
    ok: true,
    parent: parent.SnapshotId,
    child: child.SnapshotId,
    parentBlocks: listed.blocks.length,
    parentPages: listed.pages,
    childBlocks: childList.blocks.length,
    unrelatedError: { name: unrelated.name, reason: unrelated.Reason, status: unrelated.$metadata?.httpStatusCode },
  });
  return result;
}

main().then(
  (r) => { console.log(JSON.stringify(r)); process.exit(r.ok ? 0 : 1); },
  (e) => { console.log(JSON.stringify({ ok: false, error: `${e.name}: ${e.message}`, status: e.$metadata?.httpStatusCode })); process.exit(1); },
);
