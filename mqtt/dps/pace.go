package dps

import "time"

// DPS allows a device 5 polls in any 10 seconds (reference §3); the client
// keeps under that whatever retry-after says, and waits at least minWait
// between requests so a retry-after of 0 cannot make it spin.
const (
	pollLimit   = 5
	pollWindow  = 10 * time.Second
	minWait     = time.Second
	defaultWait = 2 * time.Second // C# SDK's interval when retry-after is absent
	maxBackoff  = 30 * time.Second
)

// pacer remembers when requests were sent in this registration.
type pacer struct {
	sent []time.Time
}

// record notes a request sent at t.
func (p *pacer) record(t time.Time) {
	p.sent = append(p.sent, t)
	if len(p.sent) > pollLimit {
		p.sent = p.sent[len(p.sent)-pollLimit:]
	}
}

// delay is how long to wait, from now, before the next request: the wait
// asked for (at least minWait), longer if that request would be the sixth in
// ten seconds.
func (p *pacer) delay(now time.Time, wait time.Duration) time.Duration {
	wait = max(wait, minWait)
	if len(p.sent) >= pollLimit {
		oldest := p.sent[len(p.sent)-pollLimit]
		wait = max(wait, oldest.Add(pollWindow).Sub(now))
	}
	return wait
}

// pollWait is the wait DPS asked for with an in-progress answer, or the
// default when it gave none.
func pollWait(rt responseTopic) time.Duration {
	if rt.hasRetryAfter {
		return rt.retryAfter
	}
	return defaultWait
}

// throttleWait is the wait after the n-th consecutive throttled answer
// (n ≥ 1): DPS's retry-after when given, else a doubling from defaultWait.
func throttleWait(rt responseTopic, n int) time.Duration {
	if rt.hasRetryAfter {
		return rt.retryAfter
	}
	d := defaultWait
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}
