// What a benchmark reads about another process from /proc: CPU time and peak memory.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <dirent.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace bench {

struct ProcStat {
  pid_t ppid = 0;
  long utime = 0, stime = 0;    // the process's own CPU, in clock ticks
  long cutime = 0, cstime = 0;  // its children's that it waited for
};

// Fields of /proc/PID/stat; all zero once the process is gone.
inline ProcStat ReadProcStat(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  ProcStat s;
  if (line.empty()) return s;
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string skip;
  fields >> skip >> s.ppid;                     // fields 3, 4
  for (int i = 5; i < 14; ++i) fields >> skip;  // fields 5..13
  fields >> s.utime >> s.stime >> s.cutime >> s.cstime;
  return s;
}

// CPU seconds (user + system) of a process; 0 once it is gone.
inline double CpuSeconds(pid_t pid) {
  const ProcStat s = ReadProcStat(pid);
  return (s.utime + s.stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU seconds of a server and its children (PostgreSQL's backends): theirs, live or reaped.
inline double TreeCpuSeconds(pid_t root) {
  long ticks = 0;
  if (DIR* dir = opendir("/proc")) {
    while (dirent* e = readdir(dir)) {
      const pid_t pid = static_cast<pid_t>(std::atol(e->d_name));
      if (pid <= 0) continue;
      const ProcStat s = ReadProcStat(pid);
      if (pid == root || s.ppid == root) ticks += s.utime + s.stime + s.cutime + s.cstime;
    }
    closedir(dir);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU seconds the whole machine spent busy (all cores: user, nice, system, irq, softirq, steal).
inline double MachineBusySeconds() {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  return (user + nice + system + irq + softirq + steal) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The pid in the first line of a pid file; 0 when there is none.
inline pid_t PidFromFile(const std::string& path) {
  std::ifstream in(path);
  long pid = 0;
  in >> pid;
  return static_cast<pid_t>(pid);
}

// Peak resident memory (VmHWM) of a process, in KiB; 0 when unknown.
inline int64_t PeakRssKb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) return std::stoll(line.substr(6));
  return 0;
}

}  // namespace bench
