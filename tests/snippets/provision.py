# The Python snippet of the hosted service's API docs (../shared/seed/heartbeat-monitors.txt),
# as written there (its indentation restored). tests/test_snippets.py points BASE at a
# running lastseen and runs it.
import os, httpx
PAT = os.environ['OBSERVE24_PAT'] # owner-or-admin
BASE = 'https://api.24observe.com/api/v1'
H = {'authorization': f'Bearer {PAT}', 'content-type': 'application/json'}
def provision_heartbeat(name: str, interval_sec: int) -> str:
    create = httpx.post(f'{BASE}/monitors', headers=H, json={
        'name': name,
        'url': f'internal://{name}',
        'type': 'heartbeat',
        'intervalSec': interval_sec,
        'timeoutMs': 10000,
        'heartbeatGraceSec': 60,
        'alertEmail': os.environ['OPS_EMAIL'],
    })
    create.raise_for_status()
    monitor_id = create.json()['id']
    sec = httpx.get(f'{BASE}/monitors/{monitor_id}/secrets',
                    headers={'authorization': f'Bearer {PAT}'})
    sec.raise_for_status()
    token = sec.json()['heartbeatToken']
    return f'{BASE}/heartbeats/{token}'
# In your job loop
def ping(url: str):
    r = httpx.post(url, timeout=10)
    if r.status_code != 204:
        raise RuntimeError(f'heartbeat: {r.status_code}')

# ---- the test's driver (not part of the docs) ----
if __name__ == '__main__':
    url = provision_heartbeat('python-snippet', 300)
    ping(url)
    print(url)
