#!/usr/bin/env python3
"""Checks the ECS task definitions and CloudFormation templates.

usage: scripts/validate-ecs.py [PATH ...]

Each PATH is a file or a directory (default: the repository's ecs/). A directory contributes its *.json
files as task definitions and its *.yaml / *.yml files, and those in its cloudformation/ folder, as
templates.

- A task definition (*.json) is the input of ECS's RegisterTaskDefinition, as
  `aws ecs register-task-definition --cli-input-json file://...` takes it. It is validated against that
  operation's input shape in botocore's ECS model: unknown keys, wrong types, missing required members,
  and values outside a member's enumeration are errors; so are capabilities ECS does not list and, for
  Fargate, what its documentation rules out (a network mode other than awsvpc, pidMode host, adding a
  capability other than SYS_PTRACE).
- A template (*.yaml, *.yml) is linted with cfn-lint; an error or a warning fails it.
- A task definition and a template in the same run with the same name (ecs/daemon-ec2.json and
  ecs/cloudformation/daemon-ec2.yaml) must hold the same task definition: the template's
  AWS::ECS::TaskDefinition, its property names turned into the API's, must match the JSON member for
  member. A value the template computes (Ref, Fn::*) matches anything; the roles' ARNs are left out.

Exit status: 0 when every file passes, 1 when one does not, 2 when botocore or cfn-lint is missing.
"""

import json
import re
import sys
from pathlib import Path

try:
    import botocore.session
    from botocore.validate import ParamValidator
    from botocore.model import ListShape, MapShape, StringShape, StructureShape
    import cfnlint.decode
    from cfnlint.api import lint_file
except ImportError as error:
    print(f"validate-ecs: {error}: this check needs botocore and cfn-lint: pip install botocore cfn-lint",
          file=sys.stderr)
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent

# Template properties whose keys are the user's (log driver options, labels), not property names.
USER_MAPS = {"Options", "DockerLabels", "DriverOpts", "Labels", "SecretOptions"}
# Members the template computes from other resources: never compared.
COMPUTED = {"executionRoleArn", "taskRoleArn"}


def collect(paths):
    task_definitions, templates = [], []
    for path in paths:
        if path.is_dir():
            task_definitions += sorted(path.glob("*.json"))
            for folder in (path, path / "cloudformation"):
                templates += sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
        elif path.suffix == ".json":
            task_definitions.append(path)
        elif path.suffix in (".yaml", ".yml"):
            templates.append(path)
        else:
            raise SystemExit(f"validate-ecs: {path}: neither a directory, a .json task definition nor a template")
    return task_definitions, templates


def enum_errors(value, shape, path):
    """Values outside an enumeration: botocore's ParamValidator leaves enums to the service."""
    if isinstance(shape, StringShape) and shape.enum and isinstance(value, str) and value not in shape.enum:
        yield f"Invalid value for parameter {path}: {value!r}, expected one of: {', '.join(shape.enum)}"
    elif isinstance(shape, StructureShape) and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                yield from enum_errors(value[name], member, f"{path}.{name}" if path else name)
    elif isinstance(shape, ListShape) and isinstance(value, list):
        for i, item in enumerate(value):
            yield from enum_errors(item, shape.member, f"{path}[{i}]")
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        for key, item in value.items():
            yield from enum_errors(item, shape.value, f"{path}.{key}")


def capability_names(shape):
    """The capabilities ECS accepts: listed in the model's documentation of KernelCapabilities.add, not as an enum."""
    linux = shape.members["containerDefinitions"].member.members["linuxParameters"]
    documentation = linux.members["capabilities"].members["add"].documentation
    names = set(re.findall(r'"([A-Z_]+)"', documentation.partition("Valid values:")[2]))
    if not names:
        raise SystemExit("validate-ecs: botocore's ECS model no longer lists the valid capabilities: "
                         "update this script")
    return names


def documented_rules(params, shape):
    """What the model's documentation says and its shapes do not encode."""
    valid = capability_names(shape)
    fargate = "FARGATE" in params.get("requiresCompatibilities", [])
    if fargate and params.get("networkMode") != "awsvpc":
        yield "networkMode: Fargate requires awsvpc"
    if fargate and params.get("pidMode", "task") != "task":
        yield "pidMode: on Fargate for Linux containers, the only valid value is task"
    for i, container in enumerate(params.get("containerDefinitions", [])):
        capabilities = (container.get("linuxParameters") or {}).get("capabilities") or {}
        where = f"containerDefinitions[{i}].linuxParameters.capabilities"
        for kind in ("add", "drop"):
            for name in capabilities.get(kind, []):
                if name not in valid:
                    yield f"{where}.{kind}: {name!r} is not a capability ECS accepts"
        if fargate and set(capabilities.get("add", [])) - {"SYS_PTRACE"}:
            yield f"{where}.add: Fargate supports adding SYS_PTRACE only"


def check_task_definition(path, shape):
    try:
        params = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return [f"not readable as JSON: {error}"]
    if not isinstance(params, dict):
        return ["not a JSON object"]
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        return [line.strip() for line in report.generate_report().splitlines() if line.strip()]
    return list(enum_errors(params, shape, "")) + list(documented_rules(params, shape))


def check_template(path):
    return [
        f"{match.rule.id} line {match.linenumber}: {match.message}"
        for match in lint_file(path)
        if match.rule.id[:1] in ("E", "W")
    ]


def api_names(value, user_map=False):
    """A template's property value with the API's member names: the first letter in lower case."""
    if isinstance(value, dict):
        if is_computed(value):
            return value
        return {
            (key if user_map else key[:1].lower() + key[1:]): api_names(item, not user_map and key in USER_MAPS)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [api_names(item) for item in value]
    return value


def is_computed(value):
    """An intrinsic function: {"Ref": ...} or {"Fn::...": ...}."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    name = next(iter(value))
    return name == "Ref" or name.startswith("Fn::")


def differences(expected, actual, path):
    if is_computed(actual):
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual)):
            where = f"{path}.{key}" if path else key
            if key not in actual:
                found.append(f"{where}: in the JSON, not in the template")
            elif key not in expected:
                found.append(f"{where}: in the template, not in the JSON")
            else:
                found += differences(expected[key], actual[key], where)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items in the JSON, {len(actual)} in the template"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: {expected!r} in the JSON, {actual!r} in the template"]


def check_same_task(json_path, template_path):
    template, problems = cfnlint.decode.decode(template_path)
    if problems or template is None:
        return [f"{template_path} does not decode"]
    tasks = [r.get("Properties", {}) for r in template.get("Resources", {}).values()
             if r.get("Type") == "AWS::ECS::TaskDefinition"]
    if len(tasks) != 1:
        return [f"{template_path} has {len(tasks)} AWS::ECS::TaskDefinition resources, expected 1"]
    expected = {k: v for k, v in json.loads(json_path.read_text()).items() if k not in COMPUTED}
    actual = {k: v for k, v in api_names(tasks[0]).items() if k not in COMPUTED}
    return differences(expected, actual, "")


def shown(path):
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def main(arguments):
    paths = [Path(a) for a in arguments] or [ROOT / "ecs"]
    task_definitions, templates = collect(paths)
    if not task_definitions and not templates:
        print(f"validate-ecs: nothing to check in {', '.join(map(str, paths))}", file=sys.stderr)
        return 1
    shape = botocore.session.get_session().get_service_model("ecs").operation_model(
        "RegisterTaskDefinition").input_shape

    checks = [(p, "RegisterTaskDefinition input", lambda p=p: check_task_definition(p, shape))
              for p in task_definitions]
    checks += [(p, "cfn-lint", lambda p=p: check_template(p)) for p in templates]
    for j in task_definitions:
        for t in templates:
            if j.stem == t.stem:
                checks.append((j, f"same task definition as {shown(t)}", lambda j=j, t=t: check_same_task(j, t)))

    failed = 0
    for path, what, check in checks:
        errors = check()
        if errors:
            failed += 1
            print(f"FAIL {shown(path)} ({what})", file=sys.stderr, flush=True)
            for error in errors:
                print(f"    {error}", file=sys.stderr, flush=True)
        else:
            print(f"ok   {shown(path)} ({what})", flush=True)
    print(f"validate-ecs: {len(checks)} checks, {failed} failing", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
