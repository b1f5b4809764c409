package mqttsrv

import (
	"fmt"
	"sync"
)

// Registry enforces one connection per key, as DPS (per registration ID) and IoT Hub (per device ID) do:
// registering a connection closes the one registered before it under the same key, with ErrReplaced. It is
// also how an admin API finds a device's connection. The zero value is ready to use.
type Registry struct {
	mu    sync.Mutex
	conns map[string]*Conn
}

// Register makes c the connection for key and closes the previous one, which it returns (nil if none). It
// does not wait for the previous session to end; a front-end whose state must not overlap waits on
// previous.Done(), outside its own Session methods.
func (r *Registry) Register(key string, c *Conn) (previous *Conn) {
	r.mu.Lock()
	if r.conns == nil {
		r.conns = make(map[string]*Conn)
	}
	previous = r.conns[key]
	r.conns[key] = c
	r.mu.Unlock()
	if previous != nil && previous != c {
		previous.Close(fmt.Errorf("%w: a new connection registered as %q", ErrReplaced, key))
	}
	return previous
}

// Unregister removes c if it is still the connection for key, and reports whether it was. A replaced
// connection unregistering itself from Session.Closed thus leaves its successor in place.
func (r *Registry) Unregister(key string, c *Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns[key] != c {
		return false
	}
	delete(r.conns, key)
	return true
}

// Lookup returns the connection registered for key, or nil.
func (r *Registry) Lookup(key string) *Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[key]
}
