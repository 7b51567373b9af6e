/* errors.h — every error name the daemon replies with. The interface
 * description (io.pipelined.varlink) declares each with its parameters;
 * PROTOCOL.md says when each is sent. */
#pragma once

#define PROTO_INTERFACE "io.pipelined"
#define PROTO_SERVICE_INTERFACE "org.varlink.service"

/* org.varlink.service: the standard errors every Varlink service uses. */
#define PROTO_ERR_INTERFACE_NOT_FOUND "org.varlink.service.InterfaceNotFound"
#define PROTO_ERR_METHOD_NOT_FOUND "org.varlink.service.MethodNotFound"
#define PROTO_ERR_METHOD_NOT_IMPLEMENTED "org.varlink.service.MethodNotImplemented"
#define PROTO_ERR_INVALID_PARAMETER "org.varlink.service.InvalidParameter"
#define PROTO_ERR_EXPECTED_MORE "org.varlink.service.ExpectedMore"

/* io.pipelined */
#define PROTO_ERR_NO_SUCH_PIPELINE "io.pipelined.NoSuchPipeline"
#define PROTO_ERR_NO_SUCH_STAGE "io.pipelined.NoSuchStage"
#define PROTO_ERR_NO_SUCH_JOB "io.pipelined.NoSuchJob"
#define PROTO_ERR_BUSY "io.pipelined.Busy"
#define PROTO_ERR_PIPELINE_CLOSED "io.pipelined.PipelineClosed"
#define PROTO_ERR_SHUTTING_DOWN "io.pipelined.ShuttingDown"
#define PROTO_ERR_JOB_NOT_CANCELLABLE "io.pipelined.JobNotCancellable"
#define PROTO_ERR_JOB_NOT_REQUEUEABLE "io.pipelined.JobNotRequeueable"
#define PROTO_ERR_INVALID_MESSAGE "io.pipelined.InvalidMessage"
#define PROTO_ERR_MESSAGE_TOO_LARGE "io.pipelined.MessageTooLarge"
#define PROTO_ERR_LIMIT_EXCEEDED "io.pipelined.LimitExceeded"
#define PROTO_ERR_CONFIG_INVALID "io.pipelined.ConfigInvalid"
#define PROTO_ERR_INTERNAL "io.pipelined.InternalError"
#define PROTO_ERR_JOURNAL_FAILED "io.pipelined.JournalFailed"
#define PROTO_ERR_NO_SPACE "io.pipelined.NoSpace"
#define PROTO_ERR_PERMISSION_DENIED   "io.pipelined.PermissionDenied"
