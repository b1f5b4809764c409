package emulator

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// dps is the DPS front-end: it authenticates devices at CONNECT, answers
// register and operation-status requests on their connections, and carries
// out assignments (allocation, re-provisioning, certificate issuance) in the
// background, as the service does between its 202 and its 200.
type dps struct {
	e   *Emulator
	log *zap.Logger

	// conns keeps one connection per registration ID; a new one replaces
	// the old, as the gateway does.
	conns mqttsrv.Registry

	// Tunables. Tests and benchmarks set them after New and before Start.
	assignDelay  time.Duration // from the 202 until the assignment is done
	retryAfter   int           // seconds, in 202 answers
	operationTTL time.Duration // how long a finished operation can be polled
	pollLimit    int           // polls per device per pollWindow
	pollWindow   time.Duration

	// ctx ends background work (pending assignments, delayed answers,
	// session workers) when the emulator closes.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	ops    dpsOperations
	polls  dpsPollLimiter

	// assignMu serialises allocation with the device update it leads to,
	// so "evenly" sees every earlier assignment.
	assignMu sync.Mutex
}

// Default tunables: the service answers a register with retry-after=3 and is
// usually done by the first poll.
const (
	dpsDefaultAssignDelay  = time.Second
	dpsDefaultOperationTTL = 10 * time.Minute
)

func newDPS(e *Emulator) *dps {
	ctx, cancel := context.WithCancel(context.Background())
	return &dps{
		e:            e,
		log:          e.log.Named("dps"),
		assignDelay:  dpsDefaultAssignDelay,
		retryAfter:   dpsDefaultRetryAfter,
		operationTTL: dpsDefaultOperationTTL,
		pollLimit:    dpsPollLimit,
		pollWindow:   dpsPollWindow,
		ctx:          ctx,
		cancel:       cancel,
		ops:          dpsOperations{byID: map[string]*dpsOperation{}},
		polls:        dpsPollLimiter{devices: map[string][]time.Time{}},
	}
}

// Connect authenticates a device (reference §1.2) and, if it may register,
// gives it a session. Every refusal is CONNACK 5, "not authorized": that is
// what Microsoft's MQTT protocol gateway sends for any failed authentication,
// an unusable user name or client ID included, and what device SDKs report
// for a wrong DPS key. Injected faults refuse with 3, "server unavailable",
// the one code SDKs treat as worth retrying.
func (d *dps) Connect(ctx context.Context, req *mqttsrv.ConnectRequest) (mqttsrv.Session, mqttsrv.ConnackCode) {
	log := d.log.With(zap.String("registration_id", req.ClientID), zap.Stringer("remote", req.RemoteAddr))
	if code, refused := d.connectFault(ctx, req.ClientID, log); refused {
		return nil, code
	}
	id, err := d.authenticate(req)
	if err != nil {
		log.Warn("DPS refused the connection", zap.Error(err))
		return nil, mqttsrv.RefusedNotAuthorized
	}
	s := newDPSSession(ctx, d, req.Conn, id, log)
	if !d.spawn(s.run) {
		log.Info("DPS refused the connection: the emulator is closing")
		return nil, mqttsrv.RefusedServerUnavailable
	}
	d.conns.Register(strings.ToLower(id.registrationID), req.Conn)
	log.Info("device connected to DPS", id.fields()...)
	return s, mqttsrv.Accepted
}

// close stops background work and waits for it. The MQTT server has already
// closed every connection by then (Emulator.Close), so no new work arrives.
func (d *dps) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// spawn runs fn on a goroutine close waits for, unless the emulator is
// closing. fn must return once d.ctx is done.
func (d *dps) spawn(fn func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		fn()
	}()
	return true
}

// sleep waits for dur, or until ctx or the emulator ends; it reports whether
// the full time passed.
func (d *dps) sleep(ctx context.Context, dur time.Duration) bool {
	if dur <= 0 {
		return ctx.Err() == nil && d.ctx.Err() == nil
	}
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-d.ctx.Done():
		return false
	}
}
