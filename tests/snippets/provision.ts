// The TypeScript snippet of the hosted service's API docs (../shared/seed/heartbeat-monitors.txt),
// as written there. tests/test_snippets.py points BASE at a running lastseen and runs it.
const PAT = process.env.OBSERVE24_PAT!; // owner-or-admin
const BASE = 'https://api.24observe.com/api/v1';
async function provisionHeartbeat(name: string, intervalSec: 60 | 300 | 900) {
// 1. Create the monitor
const create = await fetch(`${BASE}/monitors`, {
method: 'POST',
headers: { authorization: `Bearer ${PAT}`, 'content-type': 'application/json' },
body: JSON.stringify({
name,
url: `internal://${name}`, // url is required by schema; not used for heartbeats
type: 'heartbeat',
intervalSec,
timeoutMs: 10000,
heartbeatGraceSec: 60,
alertEmail: process.env.OPS_EMAIL,
}),
});
if (!create.ok) throw new Error(`create: ${create.status} ${await create.text()}`);
const monitor = await create.json();
// 2. Fetch the plaintext heartbeat token
const sec = await fetch(`${BASE}/monitors/${monitor.id}/secrets`, {
headers: { authorization: `Bearer ${PAT}` },
});
if (!sec.ok) throw new Error(`secrets: ${sec.status}`);
const { heartbeatToken } = await sec.json();
return {
monitorId: monitor.id,
heartbeatUrl: `${BASE}/heartbeats/${heartbeatToken}`,
};
}
// Use in your job loop
async function ping(url: string) {
const r = await fetch(url, { method: 'POST' });
if (r.status !== 204) throw new Error(`heartbeat: ${r.status}`);
}

// ---- the test's driver (not part of the docs) ----
(async () => {
  const { monitorId, heartbeatUrl } = await provisionHeartbeat('ts-snippet', 60);
  await ping(heartbeatUrl);
  console.log(JSON.stringify({ monitorId, heartbeatUrl }));
})().catch((error) => {
  console.error(String(error));
  process.exit(1);
});
