-- Stage replicas halted (reject ratio) or paused (a stage-wide breaker open), published by the
-- replicas themselves (shared/runtime/condition.py) so the job API can say why a job does not
-- move.  A row is refreshed every few seconds while its condition lasts and deleted when it ends;
-- readers ignore rows not refreshed recently (a replica killed while halted leaves one behind).
CREATE TABLE stage_conditions (
    namespace  text NOT NULL,          -- the stage's topic namespace ("" in production)
    stage      text NOT NULL,
    host       text NOT NULL,          -- replica ids are per host (the local stack) or per pod
    replica    text NOT NULL,
    state      text NOT NULL CHECK (state IN ('halted', 'paused')),
    reason     text NOT NULL,
    since      timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, stage, host, replica)
);
