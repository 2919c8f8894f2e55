export const meta = { name: "args-from-yml-upper", description: "--args-from-file with an upper-case .YML extension is read as YAML" };

export default { args, json: JSON.stringify(args) };
