package main

import (
	"fmt"
	"net"
	"os"
)

// sdNotify sends a state line ("READY=1", "STOPPING=1") to systemd's
// notification socket when edgegate runs under a Type=notify unit. It does
// nothing when NOTIFY_SOCKET is unset.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // abstract socket
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
