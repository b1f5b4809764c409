package mqttsrv

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Options configures a Server. Zero values mean the defaults below; only Handler is required.
type Options struct {
	// Handler accepts or refuses each connection.
	Handler Handler
	// MaxPacketSize caps a packet from a client, fixed header included; a larger one closes the connection
	// before its body is read. Default 256 KiB, IoT Hub's message limit; the DPS front-end sets 96 KiB.
	MaxPacketSize int
	// ConnectTimeout bounds the TLS handshake and the arrival of the CONNECT packet. Default 10 s.
	ConnectTimeout time.Duration
	// PacketTimeout bounds the arrival of the rest of a packet once its first byte has come, so a client
	// cannot hold a buffer by trickling bytes. Keep-alive covers the wait for that first byte. Default 30 s.
	PacketTimeout time.Duration
	// WriteTimeout bounds each write to a client; a client that does not read is disconnected rather than
	// blocking its publishers. Default 10 s.
	WriteTimeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *zap.Logger
}

const (
	defaultMaxPacketSize  = 256 << 10
	defaultConnectTimeout = 10 * time.Second
	defaultPacketTimeout  = 30 * time.Second
	defaultWriteTimeout   = 10 * time.Second
	// minPacketSize admits a CONNECT with a short client identifier; anything smaller is a configuration slip.
	minPacketSize = 64
)

// withDefaults validates o and fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Handler == nil {
		return o, errors.New("mqttsrv options: Handler is required")
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = defaultMaxPacketSize
	}
	if o.MaxPacketSize < minPacketSize || o.MaxPacketSize > 5+maxRemainingLength {
		return o, fmt.Errorf("mqttsrv options: MaxPacketSize %d is outside [%d, %d]",
			o.MaxPacketSize, minPacketSize, 5+maxRemainingLength)
	}
	for _, d := range []struct {
		name  string
		value *time.Duration
		def   time.Duration
	}{
		{"ConnectTimeout", &o.ConnectTimeout, defaultConnectTimeout},
		{"PacketTimeout", &o.PacketTimeout, defaultPacketTimeout},
		{"WriteTimeout", &o.WriteTimeout, defaultWriteTimeout},
	} {
		if *d.value < 0 {
			return o, fmt.Errorf("mqttsrv options: %s %s is negative; use 0 for the default %s", d.name, *d.value, d.def)
		}
		if *d.value == 0 {
			*d.value = d.def
		}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o, nil
}
