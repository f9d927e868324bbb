package main

import (
	"bytes"
	"fmt"
	"log/syslog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
)

// Where the program's warnings and errors go. Until the mount is being
// set up they go to stderr, where the caller (a shell, mount(8), podman)
// reads them. Once the overlay is validated, logging starts: each message
// names the mountpoint, since several mounts may log to the same place,
// and goes to stderr in the foreground; the daemon's stderr is /dev/null,
// so it sends them to syslog through /dev/log (the journal under
// systemd), one line each. Without a syslog daemon they are lost.
var logs struct {
	mu         sync.Mutex
	started    bool
	mountpoint string
	daemon     bool
	sys        *syslog.Writer // connected at the first message
}

// startLogging starts logging for the mount at mountpoint, to syslog
// for the daemon, and makes SIGQUIT dump the goroutines to the log:
// Go's default would end the daemon and leave a dead mount behind.
func startLogging(mountpoint string, daemon bool) {
	logs.mu.Lock()
	logs.started, logs.mountpoint, logs.daemon = true, mountpoint, daemon
	logs.mu.Unlock()
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGQUIT)
	go func() {
		for range quit {
			dumpGoroutines()
		}
	}()
}

// logError logs an error: before logging starts, on stderr as it is.
func logError(format string, a ...any) {
	logLines(syslog.LOG_ERR, "", []string{fmt.Sprintf(format, a...)})
}

// logWarning logs a warning.
func logWarning(format string, a ...any) {
	logLines(syslog.LOG_WARNING, "warning: ", []string{fmt.Sprintf(format, a...)})
}

// logDebug logs lines of -d, which keeps ovlmount in the foreground:
// they go to stderr.
func logDebug(lines []string) {
	logLines(syslog.LOG_DEBUG, "", lines)
}

// logStats logs the stats, each line marked as one.
func logStats(lines []string) {
	logLines(syslog.LOG_NOTICE, "stats: ", lines)
}

// debugLog is an io.Writer for a log.Logger whose lines are -d's.
type debugLog struct{}

func (debugLog) Write(p []byte) (int, error) {
	logDebug(strings.Split(strings.TrimSuffix(string(p), "\n"), "\n"))
	return len(p), nil
}

// errorLog is an io.Writer for a log.Logger whose lines are errors.
type errorLog struct{}

func (errorLog) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimSuffix(string(p), "\n"), "\n") {
		logError("%s", l)
	}
	return len(p), nil
}

// dumpGoroutines logs the stacks of all goroutines, in the format of a
// crash, a line a message in syslog, between two lines that say what
// they are.
func dumpGoroutines() {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	lines := []string{"SIGQUIT: stacks of all goroutines follow"}
	for _, l := range strings.Split(b.String(), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	lines = append(lines, "SIGQUIT: end of the stacks; still serving")
	logLines(syslog.LOG_NOTICE, "", lines)
}

// logLines logs lines at priority p. A line not naming the mountpoint is
// prefixed with it.
func logLines(p syslog.Priority, kind string, lines []string) {
	logs.mu.Lock()
	defer logs.mu.Unlock()
	mnt := logs.mountpoint
	for i, l := range lines {
		prefix := ""
		if logs.started && !strings.Contains(l, mnt) {
			prefix = mnt + ": "
		}
		lines[i] = prefix + kind + l
	}
	if !logs.daemon {
		fmt.Fprint(os.Stderr, "ovlmount: "+strings.Join(lines, "\novlmount: ")+"\n")
		return
	}
	if logs.sys == nil {
		w, err := syslog.Dial("", "", syslog.LOG_DAEMON|p, "ovlmount")
		if err != nil {
			return
		}
		logs.sys = w
	}
	for _, l := range lines {
		var err error
		switch p {
		case syslog.LOG_ERR:
			err = logs.sys.Err(l)
		case syslog.LOG_WARNING:
			err = logs.sys.Warning(l)
		default:
			err = logs.sys.Notice(l)
		}
		if err != nil {
			return
		}
	}
}
