package emulator

import (
	"crypto/x509"
	"encoding/json"
	"time"
)

// dpsOperation is one registration operation, from its 202 until it expires.
// The fields above the line are set before the operation is shared; those
// below, once, by complete, under dps.mu.
type dpsOperation struct {
	id             string
	registrationID string // as the device spells it
	identity       dpsIdentity
	enrollment     Enrollment // as it was when the device registered
	csr            *x509.CertificateRequest
	payload        json.RawMessage
	certFault      *Fault // an issuance fault matched at register
	created        time.Time

	done   bool
	result dpsOperationStatus
	body   []byte // result, encoded once: polls re-send it
}

// dpsOperations indexes operations by ID and expires them in creation order,
// so memory stays bounded however many devices register.
type dpsOperations struct {
	byID  map[string]*dpsOperation
	order []*dpsOperation
	head  int // order[:head] have expired
}

func (o *dpsOperations) add(op *dpsOperation, ttl time.Duration) {
	o.expire(op.created, ttl)
	o.byID[op.id] = op
	o.order = append(o.order, op)
}

func (o *dpsOperations) get(id string) *dpsOperation { return o.byID[id] }

func (o *dpsOperations) expire(now time.Time, ttl time.Duration) {
	for o.head < len(o.order) && now.Sub(o.order[o.head].created) >= ttl {
		delete(o.byID, o.order[o.head].id)
		o.order[o.head] = nil
		o.head++
	}
	// Reclaim the expired prefix once it is most of the slice.
	if o.head >= 1024 && o.head*2 >= len(o.order) {
		o.order = append([]*dpsOperation(nil), o.order[o.head:]...)
		o.head = 0
	}
}

// dpsPollLimiter enforces DPS's per-device polling limit
// ([DOC-DPS-LIMITS]: 5 per 10 s) over a sliding window.
type dpsPollLimiter struct {
	devices map[string][]time.Time // lower-case registration ID -> recent polls, oldest first
	sweepAt int
}

// allow records a poll at now, unless limit polls already fall within
// window; then wait is how long until the oldest of them leaves it. Refused
// polls are not counted, so a device that honours retry-after gets through.
func (l *dpsPollLimiter) allow(device string, now time.Time, limit int, window time.Duration) (ok bool, wait time.Duration) {
	l.sweep(now, window)
	recent := l.devices[device]
	i := 0
	for i < len(recent) && now.Sub(recent[i]) >= window {
		i++
	}
	recent = recent[i:]
	if len(recent) >= limit {
		l.devices[device] = recent
		return false, recent[len(recent)-limit].Add(window).Sub(now)
	}
	l.devices[device] = append(recent, now)
	return true, 0
}

// sweep forgets devices with no poll in the window, once the map has
// doubled since the last sweep: amortised constant time per poll.
func (l *dpsPollLimiter) sweep(now time.Time, window time.Duration) {
	if len(l.devices) < l.sweepAt {
		return
	}
	for dev, recent := range l.devices {
		if len(recent) == 0 || now.Sub(recent[len(recent)-1]) >= window {
			delete(l.devices, dev)
		}
	}
	l.sweepAt = max(1024, 2*len(l.devices))
}

// dpsRetryAfter rounds a wait up to whole seconds, at least one, as
// retry-after carries it.
func dpsRetryAfter(wait time.Duration) int {
	return max(1, int((wait+time.Second-1)/time.Second))
}
