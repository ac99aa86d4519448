// Drives a running Tally through OpenMeter's official JavaScript SDK (@openmeter/sdk from npm),
// as a team switching from OpenMeter would: create meters, ingest single and batch events (one
// repeated), query with windows, time zones, group-by and filters. Throws on the first mismatch.
//
// Usage: node openmeter_sdk.mjs SDK_ENTRY BASE_URL API_KEY
import assert from 'node:assert/strict'
import { pathToFileURL } from 'node:url'

const [sdkEntry, baseUrl, apiKey] = process.argv.slice(2)
const { OpenMeter } = await import(pathToFileURL(sdkEntry).href)
const om = new OpenMeter({ baseUrl, apiKey })

const meter = await om.meters.create({
  slug: 'tokens_total',
  name: 'Tokens',
  aggregation: 'SUM',
  eventType: 'prompt',
  valueProperty: '$.tokens',
  groupBy: { model: '$.model' },
})
assert.equal(meter.slug, 'tokens_total')
assert.ok(meter.createdAt instanceof Date)
await om.meters.create({ slug: 'prompts', aggregation: 'COUNT', eventType: 'prompt' })
assert.deepEqual((await om.meters.list()).map((m) => m.slug), ['prompts', 'tokens_total'])
assert.equal((await om.meters.get(meter.id)).slug, 'tokens_total')

const event = (id, subject, time, data) => ({ id, source: 'chat-svc', type: 'prompt', subject, time: new Date(time), data })
const first = event('e1', 'ann', '2025-03-01T10:15:00.250Z', { tokens: 120, model: 'gpt-4o' })
await om.events.ingest(first)
await om.events.ingest([
  first, // a retry: counted once
  event('e2', 'ann', '2025-03-01T23:30:00Z', { tokens: '80.5', model: 'gpt-4o' }),
  event('e3', 'bob', '2025-03-02T08:00:00Z', { tokens: 50, model: 'claude' }),
])
// The SDK fills in id, source, specversion and time (now).
await om.events.ingest({ type: 'prompt', subject: 'cid', data: { tokens: 7, model: 'claude' } })

const all = await om.meters.query('tokens_total')
assert.equal(all.data.length, 1)
assert.equal(all.data[0].value, 257.5)

const from = new Date('2025-03-01T00:00:00Z')
const to = new Date('2025-03-03T00:00:00Z')
const daily = await om.meters.query('tokens_total', { from, to, windowSize: 'DAY' })
assert.deepEqual(
  daily.data.map((r) => [r.windowStart.toISOString(), r.windowEnd.toISOString(), r.value]),
  [
    ['2025-03-01T00:00:00.000Z', '2025-03-02T00:00:00.000Z', 200.5],
    ['2025-03-02T00:00:00.000Z', '2025-03-03T00:00:00.000Z', 50],
  ],
)

const byModel = await om.meters.query('tokens_total', { from, to, groupBy: ['model'] })
assert.deepEqual(
  byModel.data.map((r) => [r.groupBy.model, r.value]),
  [
    ['claude', 50],
    ['gpt-4o', 200.5],
  ],
)

// Hours in Kolkata (UTC+05:30) start at half past UTC hours.
const kolkata = await om.meters.query('tokens_total', {
  from,
  to,
  subject: ['ann'],
  filterGroupBy: { model: 'gpt-4o' },
  windowSize: 'HOUR',
  windowTimeZone: 'Asia/Kolkata',
})
assert.deepEqual(
  kolkata.data.map((r) => [r.subject, r.windowStart.toISOString(), r.value]),
  [
    ['ann', '2025-03-01T09:30:00.000Z', 120],
    ['ann', '2025-03-01T23:30:00.000Z', 80.5],
  ],
)

const counted = await om.meters.queryPost('prompts', { from, to, groupBy: ['subject'] })
assert.deepEqual(
  counted.data.map((r) => [r.subject, r.value]),
  [
    ['ann', 2],
    ['bob', 1],
  ],
)

// Errors arrive as the SDK's HTTPError, built from the problem+json body.
await assert.rejects(om.meters.query('tokens_total', { windowSize: 'WEEK' }), (e) => e.status === 400 && /windowSize/.test(e.message))
await assert.rejects(om.meters.get('missing'), (e) => e.status === 404)
await assert.rejects(om.events.ingest({ type: 'unmetered', subject: 'ann', data: {} }), (e) => e.status === 400 && /no meter/.test(e.message))

await om.meters.delete('prompts')
assert.deepEqual((await om.meters.list()).map((m) => m.slug), ['tokens_total'])
