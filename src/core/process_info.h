// Facts about this process that run directories record (config.json, the
// run-directory lock): the command line it was started with, the host, the
// time, the Slurm job it belongs to.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace chorus {

// Recorded once by main(); command_line() is "" until then.
void record_command_line(int argc, char** argv);
// The arguments joined by spaces, each shell-quoted where it needs to be.
const std::string& command_line();
// gethostname(2), "unknown" if it fails.
std::string host_name();
// Now in UTC, ISO 8601 to the second: "2026-12-02T04:01:40Z".
std::string utc_now();
// {"job_id", "restart_count", ...} from SLURM_JOB_ID, SLURM_RESTART_COUNT,
// SLURM_ARRAY_JOB_ID, SLURM_ARRAY_TASK_ID where set; null outside Slurm.
nlohmann::json slurm_job();

}  // namespace chorus
