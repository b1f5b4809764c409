package renewal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"math"
)

// Draw places a certificate's renewal within the jitter window: 0 renews at the threshold itself,
// and values up to the largest uint64 renew up to the whole jitter earlier.
//
// A Draw is fixed per certificate, not per check. The agent recomputes the schedule at every check;
// a fresh random value each time would move the renewal time at every check, and since the first
// draw that lands in the past triggers, devices would renew early, bunched at the start of the
// window. Derive it once with [DrawFor].
type Draw uint64

// DrawFor derives the draw for one certificate on one device: HMAC-SHA256 keyed with deviceSeed over
// the certificate's fingerprint (for example sha256 of its DER bytes). The same inputs always give
// the same draw, so the renewal time survives restarts without being stored; HMAC output is uniform,
// so a fleet whose certificates were issued in the same second spreads evenly over the jitter window.
// deviceSeed is any stable per-device value (a secret kept in the state directory is best: it also
// keeps an observer from predicting when a device will renew).
//
// The derivation is part of the schedule: changing it moves every device's renewal time.
func DrawFor(deviceSeed, fingerprint []byte) Draw {
	mac := hmac.New(sha256.New, deviceSeed)
	mac.Write(fingerprint) // a hash.Hash never returns an error from Write
	return Draw(binary.BigEndian.Uint64(mac.Sum(nil)))
}

// DrawAt returns the draw at fraction f of the jitter window, for tests and simulations that want a
// known position: 0 is the threshold itself, 0.5 is half the jitter earlier. f is clamped to [0, 1];
// 1 gives the largest draw, just short of the whole jitter.
func DrawAt(f float64) Draw {
	switch {
	case !(f > 0): // also NaN
		return 0
	case f >= 1:
		return math.MaxUint64
	}
	return Draw(f * (1 << 64))
}
