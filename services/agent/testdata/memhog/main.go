// Command memhog allocates and touches the number of MB given as its
// argument, 16 MB at a time, then exits 0: the agent's memory tests run it
// as an executor that exceeds (or fits) its grant.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

var keep [][]byte

func main() {
	mb, err := strconv.Atoi(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: memhog MB")
		os.Exit(2)
	}
	// The agent applies RLIMIT_AS right after the start: let it.
	time.Sleep(200 * time.Millisecond)
	for done := 0; done < mb; done += 16 {
		b := make([]byte, 16<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	fmt.Printf("allocated %d MB\n", mb)
}
